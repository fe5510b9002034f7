#pragma once

#include <string>
#include <vector>

#include "parallel/parallel_config.h"

namespace ditserve::worker {

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
  parallel::ParallelConfig parallel;
  bool selfcheck = false;
  int selfcheck_elements = 65536;
  // Serving (ditserve-server's gang): the model every rank loads, and the
  // frontend's control address that rank 0 dials (host:port).
  std::string model;
  std::string dtype;  // f32 | bf16 | "" (f32 on CPU, bf16 on CUDA)
  std::string control_address;
  int threads = 0;  // LibTorch intra-op threads per rank; 0: LibTorch's default
  // PipeFusion (xDiT): latent patches per stage (0: the PipeFusion degree)
  // and full-image warm-up steps.
  int num_pipeline_patch = 0;
  int warmup_steps = 1;
};

// The flags that reproduce `options` in ditserve-worker, as "--name=value".
std::vector<std::string> ToWorkerArgs(const WorkerOptions& options);

}  // namespace ditserve::worker
