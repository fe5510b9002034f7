#pragma once

// Classifier-free guidance of a replica's model output, per request:
// v = uncond + scale·(cond − uncond). Two ways to hold the branches:
// - in one batch (serial CFG): `velocity` holds the n conditional rows,
//   then the unconditional ones, and `cfg_group` is null;
// - CFG parallel: each rank of the CFG group ran one branch (rank 0 the
//   conditional), and an all-gather over `cfg_group` brings the other half
//   (counted in `stats` under "cfg").

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "worker/pipelines/comm_stats.h"

namespace ditserve::worker::pipelines {

// `scales` is float [c, 1, 1] on the velocity's device, one per request
// with CFG. In one batch some of the n requests may run without CFG:
// `cfg_members` (long [c]) names the c that use it, and `velocity` holds the
// n conditional rows, then the c unconditional ones; a request without CFG
// gets its conditional row as is. Undefined `cfg_members`: all n use it.
// Collective over `cfg_group` when it is set (every request uses CFG).
absl::StatusOr<at::Tensor> CombineCfg(const at::Tensor& velocity, const at::Tensor& scales,
                                      const at::Tensor& cfg_members, parallel::Communicator* cfg_group,
                                      CommStats* stats);

}  // namespace ditserve::worker::pipelines
