#include "worker/serve/item_request.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/step_cache_enum.h"

namespace ditserve::worker::serve {

absl::StatusOr<pipelines::GenerationRequest> RequestFromItem(const control::v1::Item& item) {
  pipelines::GenerationRequest r;
  r.prompt = item.prompt();
  r.negative_prompt = item.negative_prompt();
  r.height = item.height();
  r.width = item.width();
  r.num_inference_steps = item.num_inference_steps();
  r.guidance_scale = item.guidance_scale();
  r.true_cfg_scale = item.true_cfg_scale();
  r.seed = item.seed();
  r.max_sequence_length = item.max_sequence_length();
  const std::optional<core::StepCacheMethod> method = proto::FromProto(item.step_cache());
  if (!method.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("step_cache ", static_cast<int>(item.step_cache()), " is not a method this gang knows"));
  }
  r.cache.method = *method;
  r.cache.threshold = item.cache_threshold();
  return r;
}

absl::StatusOr<std::vector<pipelines::GenerationRequest>> RequestsFromBatch(const control::v1::RunBatch& batch) {
  std::vector<pipelines::GenerationRequest> out;
  for (const control::v1::Item& item : batch.items()) {
    auto r = RequestFromItem(item);
    if (!r.ok()) return r.status();
    out.push_back(*std::move(r));
  }
  return out;
}

}  // namespace ditserve::worker::serve
