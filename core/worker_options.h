#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "parallel/parallel_config.h"
#include "core/generation_flags.h"
#include "core/generation_plan.h"

namespace ditserve::core {

// Everything one rank of a gang is started with. ditserve-worker reads it
// from its flags (worker_flags.cc); ditserve-run builds one per rank and
// turns it back into flags with ToWorkerArgs(). Plain value, torch-free.
struct WorkerOptions {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // index on this machine; picks the CUDA device
  int local_world_size = 1;  // ranks on this machine
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: the launcher picks a free one
  double rendezvous_timeout_s = 300;
  double collective_timeout_s = 300;
  std::string device = "auto";  // cpu | cuda | auto
  std::string gloo_socket_ifname;
  bool shared_memory_transport = true;  // CPU groups on one machine use shared memory
  parallel::ParallelConfig parallel;
  bool selfcheck = false;
  int selfcheck_elements = 65536;
  int threads = 0;  // CPU threads per rank; 0: cores / local_world_size

  // The generation job (when --model is given): the flags shared with
  // ditserve-generate, and the prompts (image i uses generation.seed + i).
  GenerationFlags generation;
  std::vector<std::string> prompts;
  std::string output_dir;
  bool save_latents = false;  // also write image-NNN.latents.safetensors
  bool comm_stats = false;    // every rank prints its bytes and seconds per method
  std::string profile_dir;    // non-empty: every rank writes rank-N.trace.json of the generation
  PipeFusionOptions pipefusion;
  // Non-empty: the job's prompts run as a scripted running set
  // (join_schedule.h) instead of one batch.
  std::string join_schedule;

  // Serving (ditserve-server's gang, with --model and no --prompt): the
  // frontend's control address (host:port) that rank 0 attaches to.
  std::string control_address;
};

// The flags that reproduce `options` in ditserve-worker, as "--name=value"
// (one --prompt per prompt).
std::vector<std::string> ToWorkerArgs(const WorkerOptions& options);

// The generation job's options, checked against the model directory's
// configs (no weights read) and the parallel degrees: everything a rank
// would otherwise find out only after the gang started. INVALID_ARGUMENT
// naming the flag; NOT_FOUND for a missing model file.
absl::Status ValidateGenerationJob(const WorkerOptions& options);

// Serving checks (before the gang starts): no --prompt or --output_dir,
// dtype and threads in range, the model's configs readable and fitting the
// parallel degrees and PipeFusion options. INVALID_ARGUMENT naming the flag;
// NOT_FOUND for a missing model file.
absl::Status ValidateServing(const WorkerOptions& options);

// Removes every "--prompt V", "--prompt=V" (and "-prompt" forms) from argv
// and returns the values in order, so that --prompt can be repeated (absl
// flags keep only the last value). Call before absl::ParseCommandLine.
std::vector<std::string> TakeRepeatedPrompts(int& argc, char** argv);

}  // namespace ditserve::core
