#pragma once

// Classifier-free guidance of a replica's model output, per request:
// v = uncond + scale·(cond − uncond). Two ways to hold the branches:
// - in one batch (serial CFG): `velocity` holds the n conditional rows,
//   then the n unconditional ones, and `cfg_group` is null;
// - CFG parallel: each rank of the CFG group ran one branch (rank 0 the
//   conditional), and an all-gather over `cfg_group` brings the other half
//   (counted in `stats` under "cfg").

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "worker/pipelines/comm_stats.h"

namespace ditserve::worker::pipelines {

// `scales` is float [n, 1, 1] on the velocity's device. Collective over
// `cfg_group` when it is set.
absl::StatusOr<at::Tensor> CombineCfg(const at::Tensor& velocity, const at::Tensor& scales,
                                      parallel::Communicator* cfg_group, CommStats* stats);

}  // namespace ditserve::worker::pipelines
