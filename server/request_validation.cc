#include "server/request_validation.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/generation_plan.h"
#include "proto/step_cache_enum.h"

namespace ditserve::server {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

}  // namespace

absl::StatusOr<GenerationParams> ValidateRequest(const v1::GenerateRequest& r,
                                                 const Limits& limits, const ModelShape& model,
                                                 uint64_t random_seed) {
  GenerationParams p;
  for (const auto& [name, text] : {std::pair<const char*, const std::string*>{"prompt", &r.prompt()},
                                   {"negative_prompt", &r.negative_prompt()}}) {
    if (static_cast<int64_t>(text->size()) > limits.max_prompt_bytes) {
      return Invalid(absl::StrCat(name, " must be at most ", limits.max_prompt_bytes,
                                  " bytes, got ", text->size()));
    }
  }
  p.prompt = r.prompt();
  p.negative_prompt = r.negative_prompt();

  const int m = model.size_multiple;
  // The largest side allowed by max_pixels with the other side at its minimum.
  const int64_t max_side = std::min<int64_t>(8192, (limits.max_pixels / m) / m * m);
  p.height = r.height() == 0 ? model.default_size : r.height();
  p.width = r.width() == 0 ? model.default_size : r.width();
  for (const auto& [name, value] : {std::pair<const char*, int>{"height", p.height}, {"width", p.width}}) {
    if (value < m || value > max_side || value % m != 0) {
      return Invalid(absl::StrCat(name, " must be a multiple of ", m, " in [", m, ", ", max_side,
                                  "] (0: the model's ", model.default_size, "), got ", value));
    }
  }
  if (int64_t{p.height} * p.width > limits.max_pixels) {
    return Invalid(absl::StrCat("height x width must be at most ", limits.max_pixels,
                                " pixels, got ", p.height, " x ", p.width, " = ",
                                int64_t{p.height} * p.width));
  }
  p.num_inference_steps = r.num_inference_steps() == 0 ? limits.default_steps : r.num_inference_steps();
  if (p.num_inference_steps < 1 || p.num_inference_steps > limits.max_steps) {
    return Invalid(absl::StrCat("num_inference_steps must be in [1, ", limits.max_steps,
                                "] (0: ", limits.default_steps, "), got ", r.num_inference_steps()));
  }
  p.guidance_scale = r.has_guidance_scale() ? r.guidance_scale() : model.default_guidance_scale;
  if (!std::isfinite(p.guidance_scale) || p.guidance_scale < 0 || p.guidance_scale > 100) {
    return Invalid(absl::StrCat("guidance_scale must be in [0, 100], got ", p.guidance_scale));
  }
  if (r.has_true_cfg_scale()) p.true_cfg_scale = r.true_cfg_scale();
  if (!std::isfinite(p.true_cfg_scale) || p.true_cfg_scale < 1 || p.true_cfg_scale > 100) {
    return Invalid(absl::StrCat("true_cfg_scale must be in [1, 100], got ", p.true_cfg_scale));
  }
  if (model.guidance_scale_is_cfg && p.true_cfg_scale != 1) {
    return Invalid(absl::StrCat("true_cfg_scale must be unset or 1 for this model (", model.family,
                                "): its classifier-free guidance scale is guidance_scale"));
  }
  if (r.max_sequence_length() < 0 ||
      (model.max_sequence_length_limit > 0 && r.max_sequence_length() > model.max_sequence_length_limit)) {
    return Invalid(model.max_sequence_length_limit > 0
                       ? absl::StrCat("max_sequence_length must be in [1, ", model.max_sequence_length_limit,
                                      "] (0: the model's ", model.default_max_sequence_length, "), got ",
                                      r.max_sequence_length())
                       : absl::StrCat("max_sequence_length must be >= 0 (0: the model's default), got ",
                                      r.max_sequence_length()));
  }
  p.max_sequence_length = r.max_sequence_length() == 0 ? model.default_max_sequence_length : r.max_sequence_length();
  p.seed = r.has_seed() ? r.seed() : random_seed;
  p.num_images = r.num_images() == 0 ? 1 : r.num_images();
  if (p.num_images < 1 || p.num_images > limits.max_images) {
    return Invalid(absl::StrCat("num_images must be in [1, ", limits.max_images, "] (0: 1), got ",
                                r.num_images()));
  }
  switch (r.output_format()) {
    case v1::IMAGE_FORMAT_UNSPECIFIED:
    case v1::IMAGE_FORMAT_PNG: p.format = v1::IMAGE_FORMAT_PNG; break;
    case v1::IMAGE_FORMAT_JPEG: p.format = v1::IMAGE_FORMAT_JPEG; break;
    case v1::IMAGE_FORMAT_WEBP: p.format = v1::IMAGE_FORMAT_WEBP; break;
    default:
      return Invalid(absl::StrCat("output_format must be PNG (1), JPEG (2) or WEBP (3), got ",
                                  static_cast<int>(r.output_format())));
  }
  p.quality = r.quality() == 0 ? 90 : r.quality();
  if (p.quality < 1 || p.quality > 100) {
    return Invalid(absl::StrCat("quality must be in [1, 100] (0: 90), got ", r.quality()));
  }
  p.priority = r.priority();
  if (p.priority < -100 || p.priority > 100) {
    return Invalid(absl::StrCat("priority must be in [-100, 100], got ", p.priority));
  }
  if (r.step_cache() == v1::STEP_CACHE_UNSPECIFIED) {
    p.cache.method = limits.step_cache.default_method;
  } else if (auto method = proto::FromProto(r.step_cache()); method.has_value()) {
    p.cache.method = *method;
  } else {
    return Invalid(absl::StrCat("step_cache must be UNSPECIFIED (0), NONE (1), FIRST_BLOCK (2) or TEACACHE (3), got ",
                                static_cast<int>(r.step_cache())));
  }
  if (p.cache.method == core::StepCacheMethod::kNone) {
    if (r.has_cache_threshold()) {
      return Invalid(absl::StrCat("cache_threshold must be unset without a step cache (step_cache ",
                                  r.step_cache() == v1::STEP_CACHE_NONE ? "NONE" : "UNSPECIFIED: the server's none",
                                  "), got ", r.cache_threshold()));
    }
  } else {
    p.cache.threshold = r.has_cache_threshold() ? r.cache_threshold() : limits.step_cache.DefaultThreshold(p.cache.method);
    if (absl::Status s = core::ValidateStepCache(p.cache, limits.step_cache.MaxThreshold(p.cache.method)); !s.ok()) {
      return s;
    }
  }
  // The gang's own constraints (core/generation_plan.h), so a request the
  // gang would refuse never waits in the queue.
  core::ModelGeometry geometry;
  geometry.size_multiple = model.size_multiple;
  geometry.default_size = model.default_size;
  geometry.default_guidance_scale = model.default_guidance_scale;
  geometry.cfg_scale =
      model.guidance_scale_is_cfg ? core::CfgScaleField::kGuidanceScale : core::CfgScaleField::kTrueCfgScale;
  p.cfg = core::ResolveGuidance(geometry, p.guidance_scale, p.true_cfg_scale).cfg;
  core::PipeFusionOptions pipefusion;
  pipefusion.num_pipeline_patch = model.num_pipeline_patch;
  if (absl::Status s = core::ValidateParallelRequest(model.parallel, pipefusion, geometry,
                                                       p.height, p.width, p.cfg);
      !s.ok()) {
    return s;
  }
  return p;
}

}  // namespace ditserve::server
