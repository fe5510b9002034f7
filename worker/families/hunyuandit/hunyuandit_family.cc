#include "worker/families/hunyuandit/hunyuandit_family.h"

#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "util/status_macros.h"
#include "worker/families/components.h"
#include "worker/families/discrete_schedule_family.h"
#include "worker/families/hunyuandit/hunyuandit_text_encoder.h"
#include "worker/models/hunyuandit/hunyuandit_transformer.h"

namespace ditserve::worker::families {
namespace {

class HunyuanDiTFamily final : public DiscreteScheduleFamily {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFamily>> Open(const std::string& dir,
                                                           const core::ModelGeometry& geometry) {
    for (const char* component :
         {"scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "transformer", "vae"}) {
      if (!std::filesystem::is_directory(absl::StrCat(dir, "/", component))) {
        return absl::NotFoundError(absl::StrCat(dir, ": component ", component, " is missing"));
      }
    }
    auto f = std::unique_ptr<HunyuanDiTFamily>(new HunyuanDiTFamily());
    f->dir_ = dir;
    f->geometry_ = geometry;
    f->transformer_config_json_ = geometry.transformer_config_json;
    auto tc = hunyuandit::ParseHunyuanDiTConfig(geometry.transformer_config_json);
    if (!tc.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/transformer/config.json: ", tc.status().message()));
    }
    f->config_ = *tc;
    DITSERVE_RETURN_IF_ERROR(f->ReadScheduler(dir));
    auto vc = LoadVaeConfig(dir);
    if (!vc.ok()) return vc.status();
    f->vae_config_ = *vc;
    if (vc->latent_channels != tc->in_channels) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": vae latent_channels ", vc->latent_channels,
                                                     " != transformer in_channels ", tc->in_channels));
    }
    return std::unique_ptr<ModelFamily>(std::move(f));
  }

  int latent_channels() const override { return vae_config_.latent_channels; }
  int pooled_dim() const override { return 0; }
  int text_dim() const override { return static_cast<int>(hunyuandit::HunyuanTextDim(config_)); }
  bool cross_attention() const override { return true; }

  absl::StatusOr<std::unique_ptr<models::DitTransformer>> LoadTransformer(const models::DitPart& part,
                                                                          at::ScalarType dtype,
                                                                          c10::Device device) const override {
    auto transformer =
        hunyuandit::HunyuanDiTTransformer::Create(config_, dtype, part, models::ParameterInit::kUninitialized);
    if (!transformer.ok()) return transformer.status();
    DITSERVE_RETURN_IF_ERROR(LoadTransformerWeights(dir_, **transformer, device));
    return std::unique_ptr<models::DitTransformer>(*std::move(transformer));
  }

  absl::StatusOr<std::unique_ptr<TextConditioner>> LoadText(at::ScalarType dtype, c10::Device device) const override {
    auto text = HunyuanDiTTextEncoder::Load(dir_, config_, dtype, device);
    if (!text.ok()) return text.status();
    return std::unique_ptr<TextConditioner>(*std::move(text));
  }

 private:
  HunyuanDiTFamily() = default;
  hunyuandit::HunyuanDiTConfig config_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenHunyuanDiTFamily(const std::string& dir,
                                                                  const core::ModelGeometry& geometry) {
  return HunyuanDiTFamily::Open(dir, geometry);
}

}  // namespace ditserve::worker::families
