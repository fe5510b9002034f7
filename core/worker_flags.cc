#include "core/worker_flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/strings/numbers.h"
#include "core/generation_flags.h"

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
ABSL_FLAG(bool, shared_memory_transport, true,
          "CPU gangs: groups whose ranks all run on one machine move tensors through shared "
          "memory (/dev/shm) instead of Gloo over TCP; false forces Gloo");
ABSL_FLAG(int, data_parallel_degree, 1, "Data parallel degree (xDiT)");
ABSL_FLAG(bool, use_cfg_parallel, false, "Split classifier-free guidance over 2 ranks (xDiT)");
ABSL_FLAG(int, pipefusion_parallel_degree, 1, "PipeFusion (patch pipeline) degree (xDiT)");
ABSL_FLAG(int, ulysses_degree, 1, "Ulysses sequence parallel degree (xDiT)");
ABSL_FLAG(int, ring_degree, 1, "Ring attention sequence parallel degree (xDiT)");
ABSL_FLAG(bool, selfcheck, false,
          "Check every group's collectives against expected values and print a table");
ABSL_FLAG(int, selfcheck_elements, 65536, "Elements per tensor in the self-check");

ABSL_FLAG(int, threads, 0, "CPU threads per rank (0: this machine's cores / ranks on it, at least 1)");
ABSL_FLAG(std::string, output_dir, "", "Directory for the images (image-000.png, …), written by rank 0");
ABSL_FLAG(bool, save_latents, false, "Also write each image's final packed latents (image-NNN.latents.safetensors)");
ABSL_FLAG(bool, comm_stats, false, "Every rank prints the bytes it sent and the seconds it spent per parallel method");
ABSL_FLAG(std::string, profile_dir, "",
          "Every rank writes a Chrome trace of its generation's LibTorch operators (and CUDA kernels) to "
          "DIR/rank-N.trace.json (generation jobs only; recording slows the run)");
ABSL_FLAG(int, num_pipeline_patch, 0, "PipeFusion patches per image (xDiT; 0: the PipeFusion degree)");
ABSL_FLAG(int, warmup_steps, 1, "PipeFusion steps run synchronously on the full image before patches (xDiT)");
ABSL_FLAG(std::string, control_address, "",
          "Serving: host:port of ditserve-server's control service, which rank 0 attaches to "
          "(with --model and no --prompt)");
ABSL_FLAG(std::string, join_schedule, "",
          "Generation job: run the prompts as a running set that they join and leave between steps, one "
          "JOIN[:STEPS[:CANCEL[:CFG]]] per prompt, comma-separated (the step it joins at, its step count, the step "
          "it is cancelled at, its classifier-free guidance scale); needs no PipeFusion and no step cache");
ABSL_FLAG(std::vector<std::string>, attn_layer_num_for_pp, {},
          "Transformer blocks per PipeFusion stage, comma-separated (xDiT; default: even)");

namespace ditserve::core {

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
  o.shared_memory_transport = absl::GetFlag(FLAGS_shared_memory_transport);
  o.parallel.data_parallel_degree = absl::GetFlag(FLAGS_data_parallel_degree);
  o.parallel.use_cfg_parallel = absl::GetFlag(FLAGS_use_cfg_parallel);
  o.parallel.pipefusion_parallel_degree = absl::GetFlag(FLAGS_pipefusion_parallel_degree);
  o.parallel.ulysses_degree = absl::GetFlag(FLAGS_ulysses_degree);
  o.parallel.ring_degree = absl::GetFlag(FLAGS_ring_degree);
  o.selfcheck = absl::GetFlag(FLAGS_selfcheck);
  o.selfcheck_elements = absl::GetFlag(FLAGS_selfcheck_elements);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.generation = GenerationFlagsFromCommandLine();
  if (const std::string prompt = PromptFlag(); !prompt.empty()) o.prompts.push_back(prompt);
  o.output_dir = absl::GetFlag(FLAGS_output_dir);
  o.save_latents = absl::GetFlag(FLAGS_save_latents);
  o.comm_stats = absl::GetFlag(FLAGS_comm_stats);
  o.profile_dir = absl::GetFlag(FLAGS_profile_dir);
  o.pipefusion.num_pipeline_patch = absl::GetFlag(FLAGS_num_pipeline_patch);
  o.pipefusion.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  o.control_address = absl::GetFlag(FLAGS_control_address);
  o.join_schedule = absl::GetFlag(FLAGS_join_schedule);
  for (const std::string& n : absl::GetFlag(FLAGS_attn_layer_num_for_pp)) {
    int v = 0;
    o.pipefusion.attn_layer_num_for_pp.push_back(absl::SimpleAtoi(n, &v) ? v : -1);
  }
  return o;
}

}  // namespace ditserve::core
