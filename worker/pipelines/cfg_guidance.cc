#include "worker/pipelines/cfg_guidance.h"

#include <ATen/ATen.h>

namespace ditserve::worker::pipelines {

absl::StatusOr<at::Tensor> CombineCfg(const at::Tensor& velocity, const at::Tensor& scales,
                                      const at::Tensor& cfg_members, parallel::Communicator* cfg_group,
                                      CommStats* stats) {
  if (cfg_members.defined()) {
    if (cfg_group != nullptr) return absl::InternalError("CFG parallel needs CFG for every request");
    const int64_t c = cfg_members.size(0);
    const int64_t n = velocity.size(0) - c;
    const at::Tensor cond = velocity.narrow(0, 0, n), uncond = velocity.narrow(0, n, c);
    const at::Tensor guided_cond = cond.index_select(0, cfg_members);
    at::Tensor out = cond.clone();
    out.index_copy_(0, cfg_members, uncond + scales.to(uncond.scalar_type()) * (guided_cond - uncond));
    return out;
  }
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
