#include "worker/worker_options.h"

#include "absl/strings/str_cat.h"

namespace ditserve::worker {

std::vector<std::string> ToWorkerArgs(const WorkerOptions& o) {
  std::vector<std::string> args = {
      absl::StrCat("--rank=", o.rank),
      absl::StrCat("--world_size=", o.world_size),
      absl::StrCat("--local_rank=", o.local_rank),
      absl::StrCat("--local_world_size=", o.local_world_size),
      absl::StrCat("--master_addr=", o.master_addr),
      absl::StrCat("--master_port=", o.master_port),
      absl::StrCat("--rendezvous_timeout_s=", o.rendezvous_timeout_s),
      absl::StrCat("--collective_timeout_s=", o.collective_timeout_s),
      absl::StrCat("--device=", o.device),
      absl::StrCat("--gloo_socket_ifname=", o.gloo_socket_ifname),
      absl::StrCat("--data_parallel_degree=", o.parallel.data_parallel_degree),
      absl::StrCat("--use_cfg_parallel=", o.parallel.use_cfg_parallel ? "true" : "false"),
      absl::StrCat("--pipefusion_parallel_degree=", o.parallel.pipefusion_parallel_degree),
      absl::StrCat("--ulysses_degree=", o.parallel.ulysses_degree),
      absl::StrCat("--ring_degree=", o.parallel.ring_degree),
      absl::StrCat("--selfcheck=", o.selfcheck ? "true" : "false"),
      absl::StrCat("--selfcheck_elements=", o.selfcheck_elements),
      absl::StrCat("--model=", o.model),
      absl::StrCat("--dtype=", o.dtype),
      absl::StrCat("--control_address=", o.control_address),
      absl::StrCat("--threads=", o.threads),
      absl::StrCat("--num_pipeline_patch=", o.num_pipeline_patch),
      absl::StrCat("--warmup_steps=", o.warmup_steps),
  };
  return args;
}

}  // namespace ditserve::worker
