#pragma once

// --parallel auto: the degrees the planner predicts fastest for a gang's
// model, request and hardware profile. Torch-free (the launchers call it
// before any rank starts).

#include <string>

#include "absl/status/statusor.h"
#include "core/generation_plan.h"
#include "parallel/parallel_config.h"

namespace ditserve::planner {

struct AutoParallelRequest {
  std::string model_dir;
  std::string hardware_path;
  int world_size = 1;
  int nodes = 1;
  int height = 0;  // 0: the model's default size
  int width = 0;
  int steps = 28;
  int images = 1;
  double guidance_scale = -1;  // as the generation flags give them
  double true_cfg_scale = 1;
  int max_sequence_length = 0;
  core::PipeFusionOptions pipefusion;
  bool parallel_vae = false;
};

struct AutoParallelChoice {
  parallel::ParallelConfig config;
  std::string why;  // the prediction and the runner-up's, for the log
};

// The fastest configuration that fits the device's memory and that the
// engine accepts for this model and request (core::ValidateParallelModel /
// ValidateParallelRequest). NOT_FOUND / INVALID_ARGUMENT name the file or
// the field; FAILED_PRECONDITION when nothing fits.
absl::StatusOr<AutoParallelChoice> ChooseParallelConfig(const AutoParallelRequest& request);

}  // namespace ditserve::planner
