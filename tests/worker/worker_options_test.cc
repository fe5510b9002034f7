#include "worker/worker_options.h"

#include <gtest/gtest.h>

namespace ditserve::worker {
namespace {

TEST(WorkerOptions, ToWorkerArgsCarriesEveryField) {
  WorkerOptions o;
  o.rank = 3;
  o.world_size = 8;
  o.local_rank = 1;
  o.local_world_size = 4;
  o.master_addr = "10.0.0.2";
  o.master_port = 29501;
  o.rendezvous_timeout_s = 12.5;
  o.collective_timeout_s = 30;
  o.device = "cpu";
  o.gloo_socket_ifname = "eth0";
  o.parallel = {2, true, 1, 2, 1};
  o.selfcheck = true;
  o.selfcheck_elements = 17;
  o.model = "/models/flux";
  o.dtype = "bf16";
  o.control_address = "127.0.0.1:5000";
  o.threads = 2;
  o.num_pipeline_patch = 4;
  o.warmup_steps = 2;
  EXPECT_EQ(ToWorkerArgs(o), (std::vector<std::string>{
                                 "--rank=3", "--world_size=8", "--local_rank=1", "--local_world_size=4",
                                 "--master_addr=10.0.0.2", "--master_port=29501",
                                 "--rendezvous_timeout_s=12.5", "--collective_timeout_s=30",
                                 "--device=cpu", "--gloo_socket_ifname=eth0",
                                 "--data_parallel_degree=2", "--use_cfg_parallel=true",
                                 "--pipefusion_parallel_degree=1", "--ulysses_degree=2",
                                 "--ring_degree=1", "--selfcheck=true",
                                 "--selfcheck_elements=17", "--model=/models/flux", "--dtype=bf16",
                                 "--control_address=127.0.0.1:5000", "--threads=2",
                                 "--num_pipeline_patch=4", "--warmup_steps=2"}));
}

}  // namespace
}  // namespace ditserve::worker
