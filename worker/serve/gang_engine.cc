#include "worker/serve/gang_engine.h"

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#if DITSERVE_PARALLEL_PIPELINE
#include "worker/pipelines/parallel_flux_pipeline.h"
#endif

namespace ditserve::worker::serve {

#if DITSERVE_PARALLEL_PIPELINE

// The gang-wide pipeline: every rank takes part in every call.
struct GangEngine::Impl {
  std::unique_ptr<pipelines::ParallelFluxPipeline> pipeline;
};

absl::StatusOr<std::unique_ptr<GangEngine>> GangEngine::Load(const std::string& dir,
                                                             at::ScalarType dtype,
                                                             c10::Device device,
                                                             parallel::ProcessGroups& groups,
                                                             const EngineOptions& options) {
  auto impl = std::make_unique<Impl>();
  try {
    pipelines::PipeFusionOptions pipefusion;
    pipefusion.num_pipeline_patch = options.num_pipeline_patch;
    pipefusion.warmup_steps = options.warmup_steps;
    auto pipeline = pipelines::ParallelFluxPipeline::Load(dir, dtype, device, groups, pipefusion);
    if (!pipeline.ok()) return pipeline.status();
    impl->pipeline = *std::move(pipeline);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading ", dir, ": ", e.what()));
  }
  return std::unique_ptr<GangEngine>(new GangEngine(std::move(impl)));
}

absl::StatusOr<std::vector<pipelines::FluxResult>> GangEngine::Generate(
    const std::vector<pipelines::FluxRequest>& requests, const pipelines::StepCallback& on_step) {
  try {
    return impl_->pipeline->Generate(requests, on_step);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("generation failed: ", e.what()));
  }
}

std::vector<CommTotals> GangEngine::comm_totals() const {
  std::vector<CommTotals> out;
  for (const auto& [method, entry] : impl_->pipeline->comm_stats().by_method) {
    out.push_back({method, entry.bytes_sent, entry.seconds});
  }
  return out;
}

#else  // !DITSERVE_PARALLEL_PIPELINE

// Until ParallelFluxPipeline is implemented: the serial pipeline, a gang of one.
struct GangEngine::Impl {
  std::unique_ptr<pipelines::FluxPipeline> pipeline;
};

absl::StatusOr<std::unique_ptr<GangEngine>> GangEngine::Load(const std::string& dir,
                                                             at::ScalarType dtype,
                                                             c10::Device device,
                                                             parallel::ProcessGroups& groups,
                                                             const EngineOptions&) {
  if (groups.world().world_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "serving with a gang of ", groups.world().world_size(),
        " ranks needs ParallelFluxPipeline, which is not implemented in this build; use a "
        "gang of 1 (all parallel degrees 1)"));
  }
  auto impl = std::make_unique<Impl>();
  try {
    auto pipeline = pipelines::FluxPipeline::Load(dir, dtype, device);
    if (!pipeline.ok()) return pipeline.status();
    impl->pipeline = *std::move(pipeline);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("loading ", dir, ": ", e.what()));
  }
  return std::unique_ptr<GangEngine>(new GangEngine(std::move(impl)));
}

absl::StatusOr<std::vector<pipelines::FluxResult>> GangEngine::Generate(
    const std::vector<pipelines::FluxRequest>& requests, const pipelines::StepCallback& on_step) {
  std::vector<pipelines::FluxResult> results;
  results.reserve(requests.size());
  try {
    // The serial pipeline draws one image per call, so the batch's
    // requests run one after another. Batch progress in units of one
    // request's steps: after `done` of the n·T request-steps, step
    // ceil(done / n) of T. The same step may be reported more than once
    // (callers forward only increases); the callback runs after every
    // request-step, so a cancel takes effect within one step.
    const int n = static_cast<int>(requests.size());
    for (int i = 0; i < n; ++i) {
      const int total = requests[i].num_inference_steps;
      auto result = impl_->pipeline->Generate(requests[i], [&](int step, int) {
        const int done = i * total + step;
        return on_step ? on_step((done + n - 1) / n, total) : true;
      });
      if (!result.ok()) return result.status();
      results.push_back(*std::move(result));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("generation failed: ", e.what()));
  }
  return results;
}

std::vector<CommTotals> GangEngine::comm_totals() const { return {}; }

#endif  // DITSERVE_PARALLEL_PIPELINE

GangEngine::GangEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GangEngine::~GangEngine() = default;

int GangEngine::size_multiple() const { return impl_->pipeline->size_multiple(); }
int GangEngine::default_size() const { return impl_->pipeline->default_size(); }
bool GangEngine::uses_guidance_embedding() const {
  return impl_->pipeline->uses_guidance_embedding();
}

}  // namespace ditserve::worker::serve
