#include "worker/families/pixart/pixart_family.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "util/status_macros.h"
#include "worker/families/components.h"
#include "worker/families/discrete_schedule_family.h"
#include "worker/families/pixart/pixart_text_encoder.h"
#include "worker/models/pixart/pixart_transformer.h"

namespace ditserve::worker::families {
namespace {

class PixArtFamily final : public DiscreteScheduleFamily {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFamily>> Open(const std::string& dir,
                                                           const core::ModelGeometry& geometry) {
    for (const char* component : {"scheduler", "text_encoder", "tokenizer", "transformer", "vae"}) {
      if (!std::filesystem::is_directory(absl::StrCat(dir, "/", component))) {
        return absl::NotFoundError(absl::StrCat(dir, ": component ", component, " is missing"));
      }
    }
    auto f = std::unique_ptr<PixArtFamily>(new PixArtFamily());
    f->dir_ = dir;
    f->geometry_ = geometry;
    f->transformer_config_json_ = geometry.transformer_config_json;
    auto index = util::ReadFileToString(dir + "/model_index.json");
    if (!index.ok()) return index.status();
    const nlohmann::json j = nlohmann::json::parse(*index, nullptr, false);
    f->sigma_ = j.is_object() && j.value("_class_name", "") == "PixArtSigmaPipeline";
    auto tc = pixart::ParsePixArtTransformerConfig(geometry.transformer_config_json);
    if (!tc.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/transformer/config.json: ", tc.status().message()));
    }
    f->config_ = *tc;
    // diffusers feeds the micro-conditions only from PixArtAlphaPipeline and
    // only for sample_size 128; any other pairing fails there.
    if (tc->use_additional_conditions && (f->sigma_ || tc->sample_size != 128)) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, "/transformer/config.json: use_additional_conditions needs PixArtAlphaPipeline and sample_size 128 ",
          "(the only case in which diffusers passes the resolution and aspect ratio)"));
    }
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
  int text_dim() const override { return config_.caption_channels; }
  bool cross_attention() const override { return true; }

  absl::StatusOr<std::unique_ptr<models::DitTransformer>> LoadTransformer(const models::DitPart& part,
                                                                          at::ScalarType dtype,
                                                                          c10::Device device) const override {
    auto transformer = pixart::PixArtTransformer::Create(config_, dtype, part, models::ParameterInit::kUninitialized);
    if (!transformer.ok()) return transformer.status();
    DITSERVE_RETURN_IF_ERROR(LoadTransformerWeights(dir_, **transformer, device));
    return std::unique_ptr<models::DitTransformer>(*std::move(transformer));
  }

  absl::StatusOr<std::unique_ptr<TextConditioner>> LoadText(at::ScalarType dtype, c10::Device device) const override {
    // The pipelines' max_sequence_length: 120 (α), 300 (Σ).
    auto text = PixArtTextEncoder::Load(dir_, sigma_ ? 300 : 120, dtype, device);
    if (!text.ok()) return text.status();
    if ((*text)->sequence_dim() != config_.caption_channels) {
      return absl::InvalidArgumentError(absl::StrCat(dir_, ": text_encoder d_model ", (*text)->sequence_dim(),
                                                     " != transformer caption_channels ", config_.caption_channels));
    }
    return std::unique_ptr<TextConditioner>(*std::move(text));
  }

 private:
  PixArtFamily() = default;
  pixart::PixArtTransformerConfig config_;
  bool sigma_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenPixArtFamily(const std::string& dir,
                                                              const core::ModelGeometry& geometry) {
  return PixArtFamily::Open(dir, geometry);
}

}  // namespace ditserve::worker::families
