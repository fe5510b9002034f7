#include "worker/families/flux/flux_family.h"

// The Flux family (diffusers' FluxPipeline): FluxTransformer2DModel, CLIP
// pooled + T5 sequence, FlowMatchEuler with dynamic shifting, the 16-channel
// VAE; guidance embedding (FLUX.1-dev) and true CFG with true_cfg_scale.

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "util/status_macros.h"
#include "worker/families/components.h"
#include "worker/families/flux/flux_components.h"
#include "worker/families/flux/flux_text_encoder.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/models/flux/flux_transformer.h"

namespace ditserve::worker::families {
namespace {

class FluxFamily final : public ModelFamily {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFamily>> Open(const std::string& dir, const core::ModelGeometry& geometry) {
    DITSERVE_RETURN_IF_ERROR(CheckFluxDirectory(dir));
    auto f = std::unique_ptr<FluxFamily>(new FluxFamily());
    f->dir_ = dir;
    f->geometry_ = geometry;
    const std::string* json = &geometry.transformer_config_json;  // read once, by ReadModelGeometry
    f->transformer_config_json_ = *json;
    auto tc = flux::ParseFluxTransformerConfig(*json);
    if (!tc.ok()) return tc.status();
    f->config_ = *tc;
    auto scheduler = LoadSchedulerConfig(dir);
    if (!scheduler.ok()) return scheduler.status();
    f->scheduler_ = *scheduler;
    auto vc = LoadVaeConfig(dir);
    if (!vc.ok()) return vc.status();
    f->vae_config_ = *vc;
    if (vc->latent_channels * 4 != tc->in_channels) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": vae latent_channels ", vc->latent_channels,
                                                     " x 4 != transformer in_channels ", tc->in_channels));
    }
    return std::unique_ptr<ModelFamily>(std::move(f));
  }

  int latent_channels() const override { return vae_config_.latent_channels; }
  int pooled_dim() const override { return config_.pooled_projection_dim; }
  int text_dim() const override { return config_.joint_attention_dim; }

  // TeaCache4FLUX's published coefficients (ali-vilab/TeaCache, fitted on
  // FLUX.1-dev).
  core::TeaCachePolynomial TeaCachePolynomial() const override {
    return {4.98651651e+02, -2.83781631e+02, 5.58554382e+01, -3.82021401e+00, 2.64230861e-01};
  }
  absl::StatusOr<core::DenoisingSchedule> Schedule(int steps, int64_t image_tokens) const override {
    return core::FlowMatchSchedule(flux::FluxSigmas(steps, image_tokens, scheduler_));
  }

  absl::StatusOr<std::unique_ptr<models::DitTransformer>> LoadTransformer(const models::DitPart& part,
                                                                          at::ScalarType dtype,
                                                                          c10::Device device) const override {
    auto t = families::LoadTransformer(dir_, config_, dtype, device, part);
    if (!t.ok()) return t.status();
    return std::unique_ptr<models::DitTransformer>(*std::move(t));
  }

  absl::StatusOr<std::unique_ptr<TextConditioner>> LoadText(at::ScalarType dtype, c10::Device device) const override {
    auto text = FluxTextEncoder::Load(dir_, dtype, device);
    if (!text.ok()) return text.status();
    DITSERVE_RETURN_IF_ERROR(CheckTextWidths(dir_, config_.joint_attention_dim, config_.pooled_projection_dim, **text));
    return std::unique_ptr<TextConditioner>(*std::move(text));
  }

 private:
  FluxFamily() = default;
  flux::FluxTransformerConfig config_;
  flux::FlowMatchSchedulerConfig scheduler_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenFluxFamily(const std::string& dir, const core::ModelGeometry& geometry) {
  return FluxFamily::Open(dir, geometry);
}

}  // namespace ditserve::worker::families
