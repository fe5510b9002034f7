#pragma once

// The generation engine a serving gang runs: one collective call per batch
// of compatible requests. Built on ParallelFluxPipeline when this tree has
// its implementation (DITSERVE_PARALLEL_PIPELINE), else on the serial
// FluxPipeline, which serves a gang of one rank.

#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "parallel/process_groups.h"
#include "worker/pipelines/flux_pipeline.h"

namespace ditserve::worker::serve {

// Cumulative communication of this rank, per parallel method.
struct CommTotals {
  std::string method;
  int64_t bytes_sent = 0;
  double seconds = 0;
};

// xDiT's PipeFusion settings (used by ParallelFluxPipeline).
struct EngineOptions {
  int num_pipeline_patch = 0;  // 0: the PipeFusion degree
  int warmup_steps = 1;
};

class GangEngine {
 public:
  // Collective: every rank of `groups` calls it. Loads `dir` in `dtype` on
  // `device`. `groups` must outlive the engine. INVALID_ARGUMENT when the
  // gang's parallel configuration cannot run this engine.
  static absl::StatusOr<std::unique_ptr<GangEngine>> Load(const std::string& dir,
                                                          at::ScalarType dtype,
                                                          c10::Device device,
                                                          parallel::ProcessGroups& groups,
                                                          const EngineOptions& options = {});
  ~GangEngine();

  int size_multiple() const;
  int default_size() const;
  bool uses_guidance_embedding() const;

  // Collective. `requests` are compatible (equal size, steps, guidance,
  // true-CFG use). Returns one result per request on world rank 0 (empty
  // elsewhere). `on_step(step, total)` runs on every rank after each
  // denoising step of the batch; returning false on any rank stops every
  // rank after that step with CANCELLED. Any LibTorch exception becomes
  // INTERNAL here (the one place the worker catches c10::Error).
  absl::StatusOr<std::vector<pipelines::FluxResult>> Generate(
      const std::vector<pipelines::FluxRequest>& requests, const pipelines::StepCallback& on_step);

  std::vector<CommTotals> comm_totals() const;

 private:
  struct Impl;
  explicit GangEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::serve
