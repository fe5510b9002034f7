#include "worker/worker_flags.h"

#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(int, rank, 0, "Global rank of this process in the gang (0 … world_size-1)");
ABSL_FLAG(int, world_size, 1, "Number of ranks in the gang");
ABSL_FLAG(int, local_rank, 0, "Rank on this machine; selects the CUDA device");
ABSL_FLAG(int, local_world_size, 1, "Ranks on this machine");
ABSL_FLAG(std::string, master_addr, "127.0.0.1", "Address of rank 0, which hosts the TCPStore");
ABSL_FLAG(int, master_port, 0,
          "Port of the TCPStore on rank 0 (ditserve-run on one machine: 0 picks a free port)");
ABSL_FLAG(double, rendezvous_timeout_s, 300, "Seconds to wait for the whole gang to join");
ABSL_FLAG(double, collective_timeout_s, 300,
          "Seconds after which a collective whose peer died or hung fails");
ABSL_FLAG(std::string, device, "auto", "cpu, cuda, or auto (cuda when a GPU is present)");
ABSL_FLAG(std::string, gloo_socket_ifname, "",
          "Network interface for Gloo (default: loopback for a one-machine gang, "
          "else the hostname's address)");
ABSL_FLAG(int, data_parallel_degree, 1, "Data parallel degree (xDiT)");
ABSL_FLAG(bool, use_cfg_parallel, false, "Split classifier-free guidance over 2 ranks (xDiT)");
ABSL_FLAG(int, pipefusion_parallel_degree, 1, "PipeFusion (patch pipeline) degree (xDiT)");
ABSL_FLAG(int, ulysses_degree, 1, "Ulysses sequence parallel degree (xDiT)");
ABSL_FLAG(int, ring_degree, 1, "Ring attention sequence parallel degree (xDiT)");
ABSL_FLAG(bool, selfcheck, false,
          "Check every group's collectives against expected values and print a table");
ABSL_FLAG(int, selfcheck_elements, 65536, "Elements per tensor in the self-check");
ABSL_FLAG(std::string, model, "", "Diffusers model directory every rank loads (serving)");
ABSL_FLAG(std::string, dtype, "", "f32 or bf16 (default: f32 on CPU, bf16 on CUDA)");
ABSL_FLAG(std::string, control_address, "",
          "host:port of ditserve-server's control service, which rank 0 dials to receive work");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads per rank (0: LibTorch's default)");
ABSL_FLAG(int, num_pipeline_patch, 0,
          "PipeFusion: latent patches flowing through the stages (0: the PipeFusion degree; xDiT)");
ABSL_FLAG(int, warmup_steps, 1, "PipeFusion: full-image synchronous steps before stale K/V (xDiT)");

namespace ditserve::worker {

WorkerOptions WorkerOptionsFromFlags() {
  WorkerOptions o;
  o.rank = absl::GetFlag(FLAGS_rank);
  o.world_size = absl::GetFlag(FLAGS_world_size);
  o.local_rank = absl::GetFlag(FLAGS_local_rank);
  o.local_world_size = absl::GetFlag(FLAGS_local_world_size);
  o.master_addr = absl::GetFlag(FLAGS_master_addr);
  o.master_port = absl::GetFlag(FLAGS_master_port);
  o.rendezvous_timeout_s = absl::GetFlag(FLAGS_rendezvous_timeout_s);
  o.collective_timeout_s = absl::GetFlag(FLAGS_collective_timeout_s);
  o.device = absl::GetFlag(FLAGS_device);
  o.gloo_socket_ifname = absl::GetFlag(FLAGS_gloo_socket_ifname);
  o.parallel.data_parallel_degree = absl::GetFlag(FLAGS_data_parallel_degree);
  o.parallel.use_cfg_parallel = absl::GetFlag(FLAGS_use_cfg_parallel);
  o.parallel.pipefusion_parallel_degree = absl::GetFlag(FLAGS_pipefusion_parallel_degree);
  o.parallel.ulysses_degree = absl::GetFlag(FLAGS_ulysses_degree);
  o.parallel.ring_degree = absl::GetFlag(FLAGS_ring_degree);
  o.selfcheck = absl::GetFlag(FLAGS_selfcheck);
  o.selfcheck_elements = absl::GetFlag(FLAGS_selfcheck_elements);
  o.model = absl::GetFlag(FLAGS_model);
  o.dtype = absl::GetFlag(FLAGS_dtype);
  o.control_address = absl::GetFlag(FLAGS_control_address);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.num_pipeline_patch = absl::GetFlag(FLAGS_num_pipeline_patch);
  o.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  return o;
}

}  // namespace ditserve::worker
