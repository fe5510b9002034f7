#include "worker/serve/gang_engine.h"

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/pipelines/parallel_pipeline.h"

namespace ditserve::worker::serve {

struct GangEngine::Impl {
  std::unique_ptr<pipelines::ParallelPipeline> pipeline;
};

GangEngine::GangEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GangEngine::~GangEngine() = default;

absl::StatusOr<std::unique_ptr<GangEngine>> GangEngine::Load(const std::string& dir,
                                                             at::ScalarType dtype,
                                                             c10::Device device,
                                                             parallel::ProcessGroups& groups,
                                                             const core::PipeFusionOptions& pipefusion,
                                                             const core::VaeDecodeOptions& vae) {
  auto impl = std::make_unique<Impl>();
  try {
    auto pipeline = pipelines::ParallelPipeline::Load(dir, dtype, device, groups, pipefusion, vae);
    if (!pipeline.ok()) return pipeline.status();
    impl->pipeline = *std::move(pipeline);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading ", dir, ": ", e.what()));
  }
  return std::unique_ptr<GangEngine>(new GangEngine(std::move(impl)));
}

int GangEngine::size_multiple() const { return impl_->pipeline->size_multiple(); }
int GangEngine::default_size() const { return impl_->pipeline->default_size(); }
bool GangEngine::uses_guidance_embedding() const {
  return impl_->pipeline->uses_guidance_embedding();
}
const std::string& GangEngine::model_family() const { return impl_->pipeline->family(); }
double GangEngine::default_guidance_scale() const { return impl_->pipeline->default_guidance_scale(); }
int GangEngine::default_max_sequence_length() const { return impl_->pipeline->default_max_sequence_length(); }
int GangEngine::max_sequence_length_limit() const { return impl_->pipeline->max_sequence_length_limit(); }
std::string GangEngine::cfg_scale_field() const {
  return impl_->pipeline->cfg_scale_field() == core::CfgScaleField::kGuidanceScale ? "guidance_scale" : "true_cfg_scale";
}
const std::string& GangEngine::transformer_config_json() const { return impl_->pipeline->transformer_config_json(); }

absl::StatusOr<std::vector<pipelines::GenerationResult>> GangEngine::Generate(
    const std::vector<pipelines::GenerationRequest>& requests, const pipelines::StepCallback& on_step) {
  try {
    return impl_->pipeline->Generate(requests, on_step);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("generation failed: ", e.what()));
  }
}

absl::Status GangEngine::RunSet(pipelines::SetDriver& driver) {
  try {
    return impl_->pipeline->RunSet(driver);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("generation failed: ", e.what()));
  }
}


PhaseTimes GangEngine::last_phase_times() const {
  const pipelines::GenerateTimings& t = impl_->pipeline->last_timings();
  return PhaseTimes{t.text_encoding_s, t.denoising_s, t.vae_s, t.vae_peak_activation_bytes};
}

std::vector<CommTotals> GangEngine::comm_totals() const {
  std::vector<CommTotals> out;
  for (const auto& [method, entry] : impl_->pipeline->comm_stats().by_method) {
    out.push_back({method, entry.bytes_sent, entry.seconds});
  }
  return out;
}

}  // namespace ditserve::worker::serve
