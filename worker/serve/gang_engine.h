#pragma once

// The generation engine a serving gang runs: one collective call per batch
// of compatible requests, on ParallelPipeline (xDiT's hybrid
// parallelism; with a world of one it is the serial pipeline).

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "parallel/process_groups.h"
#include "core/generation_plan.h"
#include "core/vae_decode_options.h"
#include "worker/pipelines/generation_request.h"
#include "worker/pipelines/running_set.h"

namespace ditserve::worker::serve {

// Cumulative communication of this rank, per parallel method.
struct CommTotals {
  std::string method;
  int64_t bytes_sent = 0;
  double seconds = 0;
};

// Where the last Generate's time went, as rank 0 saw it.
struct PhaseTimes {
  double text_encoding_s = 0;
  double denoising_s = 0;
  double vae_s = 0;
  int64_t vae_peak_activation_bytes = 0;  // rank 0's largest VAE activation
};

class GangEngine {
 public:
  // Collective: every rank of `groups` calls it. Loads `dir` in `dtype` on
  // `device`. `groups` must outlive the engine. INVALID_ARGUMENT when the
  // model and the parallel configuration do not fit.
  static absl::StatusOr<std::unique_ptr<GangEngine>> Load(const std::string& dir,
                                                          at::ScalarType dtype,
                                                          c10::Device device,
                                                          parallel::ProcessGroups& groups,
                                                          const core::PipeFusionOptions& pipefusion,
                                                          const core::VaeDecodeOptions& vae = {});
  ~GangEngine();

  int size_multiple() const;
  int default_size() const;
  bool uses_guidance_embedding() const;
  const std::string& model_family() const;
  double default_guidance_scale() const;
  // A request's max_sequence_length when 0, and its largest value.
  int default_max_sequence_length() const;
  int max_sequence_length_limit() const;
  // "true_cfg_scale" (Flux) or "guidance_scale" (SD3): the CFG scale field.
  std::string cfg_scale_field() const;
  const std::string& transformer_config_json() const;

  // Collective. `requests` are compatible (equal size, steps, guidance
  // embedding value, CFG use). Returns one result per request on world rank 0 (empty
  // elsewhere). `on_step(step, total)` runs on every rank after each
  // denoising step of the batch; returning false on any rank stops every
  // rank with CANCELLED (the pipeline says after which step). Any LibTorch
  // exception becomes INTERNAL here (the one place the serving worker
  // catches c10::Error).
  absl::StatusOr<std::vector<pipelines::GenerationResult>> Generate(
      const std::vector<pipelines::GenerationRequest>& requests, const pipelines::StepCallback& on_step);

  // Collective: a running set fed by `driver` until it drains
  // (ParallelPipeline::RunSet); LibTorch exceptions become INTERNAL.
  absl::Status RunSet(pipelines::SetDriver& driver);
  // Of the last Generate (rank 0's view).
  PhaseTimes last_phase_times() const;
  std::vector<CommTotals> comm_totals() const;

 private:
  struct Impl;
  explicit GangEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::serve
