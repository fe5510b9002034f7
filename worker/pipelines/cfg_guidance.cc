#include "worker/pipelines/cfg_guidance.h"

#include <ATen/ATen.h>

namespace ditserve::worker::pipelines {

absl::StatusOr<at::Tensor> CombineCfg(const at::Tensor& velocity, const at::Tensor& scales,
                                      parallel::Communicator* cfg_group, CommStats* stats) {
  at::Tensor both = velocity;
  if (cfg_group != nullptr) {
    CommTimer timer(stats, "cfg");
    timer.AddBytes(static_cast<int64_t>(velocity.nbytes()));
    auto gathered = cfg_group->AllGather(velocity.contiguous(), 0);
    if (!gathered.ok()) return gathered.status();
    both = *gathered;
  }
  const int64_t n = both.size(0) / 2;
  const at::Tensor cond = both.narrow(0, 0, n), uncond = both.narrow(0, n, n);
  return uncond + scales.to(uncond.scalar_type()) * (cond - uncond);
}

}  // namespace ditserve::worker::pipelines
