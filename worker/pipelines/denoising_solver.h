#pragma once

// Applies a request batch's core::DenoisingSchedule to its latents: the
// model input's scale and the scheduler update of each step, token range
// by token range (a PipeFusion patch, a sequence-parallel shard), with the
// solver's history of data predictions (DPM-Solver's multistep) kept per
// token, so a range's update reads only that range. Internal to
// worker/pipelines; one per ReplicaRun, used from its thread.

#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/denoising_schedule.h"

namespace ditserve::worker::pipelines {

class DenoisingSolver {
 public:
  explicit DenoisingSolver(core::DenoisingSchedule schedule) : schedule_(std::move(schedule)) {}

  const core::DenoisingSchedule& schedule() const { return schedule_; }
  // Allocates the history, float32 zeros shaped like `latents` [n, S, C].
  void Allocate(const at::Tensor& latents);
  // The model input of `step` for samples x (x itself when unscaled).
  at::Tensor ModelInput(int step, const at::Tensor& x) const;
  // x_{step+1} of the tokens [begin, begin + x.size(1)) from their samples x
  // and the model output (after guidance), both [n, L, C]; the result is in
  // x's dtype. Records the range's data prediction when the schedule keeps
  // a history. Ranges of a step are updated before any of the next step.
  at::Tensor Step(int step, const at::Tensor& x, const at::Tensor& output, int64_t begin);
  // The history tensors (the state a PipeFusion layout change completes).
  std::vector<at::Tensor*> state();
  // A stochastic schedule's noise: returns step `step`'s standard normals
  // for every row and token, shaped as the latents; called once per step
  // that draws, in step order (the requests' generators advance by it).
  using NoiseSource = std::function<at::Tensor(int step)>;
  void set_noise_source(NoiseSource source) { noise_source_ = std::move(source); }

 private:
  core::DenoisingSchedule schedule_;
  std::vector<at::Tensor> history_;  // slot (step % depth): m_step, float32
  NoiseSource noise_source_;
  int noise_step_ = -1;  // the step `noise_` was drawn for
  at::Tensor noise_;
};

}  // namespace ditserve::worker::pipelines
