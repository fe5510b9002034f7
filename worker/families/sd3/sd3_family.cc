#include "worker/families/sd3/sd3_family.h"

// The Stable Diffusion 3 / 3.5 family (diffusers' StableDiffusion3Pipeline):
// SD3Transformer2DModel (joint blocks, qk-norm, dual attention), two CLIPs
// with projection + T5, FlowMatchEuler with the config's shift, the
// 16-channel VAE with scaling and shift; classic CFG with guidance_scale.


#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "util/status_macros.h"
#include "worker/families/components.h"
#include "worker/families/sd3/sd3_text_encoder.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/models/sd3/sd3_transformer.h"

namespace ditserve::worker::families {
namespace {

class Sd3Family final : public ModelFamily {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFamily>> Open(const std::string& dir, const core::ModelGeometry& geometry) {
    for (const char* component : {"scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                                  "transformer", "vae"}) {
      if (!std::filesystem::is_directory(absl::StrCat(dir, "/", component))) {
        return absl::NotFoundError(absl::StrCat(dir, ": component ", component, " is missing"));
      }
    }
    auto f = std::unique_ptr<Sd3Family>(new Sd3Family());
    f->dir_ = dir;
    f->geometry_ = geometry;
    const std::string* json = &geometry.transformer_config_json;  // read once, by ReadModelGeometry
    f->transformer_config_json_ = *json;
    auto tc = sd3::ParseSd3TransformerConfig(*json);
    if (!tc.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, "/transformer/config.json: ", tc.status().message()));
    f->config_ = *tc;
    auto scheduler = LoadSchedulerConfig(dir);
    if (!scheduler.ok()) return scheduler.status();
    if (scheduler->use_dynamic_shifting) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/scheduler/scheduler_config.json: use_dynamic_shifting needs a mu, which "
                            "StableDiffusion3Pipeline only takes from the caller; not supported"));
    }
    f->scheduler_ = *scheduler;
    auto vc = LoadVaeConfig(dir);
    if (!vc.ok()) return vc.status();
    f->vae_config_ = *vc;
    if (vc->latent_channels != tc->in_channels || tc->out_channels != tc->in_channels) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": vae latent_channels ", vc->latent_channels,
                                                     " != transformer in_channels ", tc->in_channels,
                                                     " / out_channels ", tc->out_channels));
    }
    return std::unique_ptr<ModelFamily>(std::move(f));
  }

  int latent_channels() const override { return vae_config_.latent_channels; }
  int pooled_dim() const override { return config_.pooled_projection_dim; }
  int text_dim() const override { return config_.joint_attention_dim; }

  // TeaCache publishes no SD3 coefficients. Fitted by bench/fit_teacache.py
  // on diffusers' StableDiffusion3Pipeline over our sd3.5-medium small
  // checkpoint (3 prompts x 28 steps, 256², CFG 7): a line (a quartic fits
  // no better over the narrow range seen, rms 0.00197 against 0.00207, and
  // diverges outside it). docs/step-caching.md.
  core::TeaCachePolynomial TeaCachePolynomial() const override { return {1.1362326437433867, 0.0040299410887242575}; }
  absl::StatusOr<core::DenoisingSchedule> Schedule(int steps, int64_t image_tokens) const override {
    // StableDiffusion3Pipeline leaves the schedule to the scheduler (mu from
    // the image token count only when the config shifts dynamically).
    return core::FlowMatchSchedule(flux::DefaultScheduleSigmas(steps, image_tokens, scheduler_));
  }

  absl::StatusOr<std::unique_ptr<models::DitTransformer>> LoadTransformer(const models::DitPart& part,
                                                                          at::ScalarType dtype,
                                                                          c10::Device device) const override {
    auto transformer = sd3::Sd3Transformer::Create(config_, dtype, part, models::ParameterInit::kUninitialized);
    if (!transformer.ok()) return transformer.status();
    DITSERVE_RETURN_IF_ERROR(LoadTransformerWeights(dir_, **transformer, device));
    return std::unique_ptr<models::DitTransformer>(*std::move(transformer));
  }

  absl::StatusOr<std::unique_ptr<TextConditioner>> LoadText(at::ScalarType dtype, c10::Device device) const override {
    auto text = Sd3TextEncoder::Load(dir_, dtype, device);
    if (!text.ok()) return text.status();
    DITSERVE_RETURN_IF_ERROR(CheckTextWidths(dir_, config_.joint_attention_dim, config_.pooled_projection_dim, **text));
    return std::unique_ptr<TextConditioner>(*std::move(text));
  }

 private:
  Sd3Family() = default;
  sd3::Sd3TransformerConfig config_;
  flux::FlowMatchSchedulerConfig scheduler_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenSd3Family(const std::string& dir, const core::ModelGeometry& geometry) {
  return Sd3Family::Open(dir, geometry);
}

}  // namespace ditserve::worker::families
