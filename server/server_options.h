#pragma once

// Everything ditserve-server is started with, as plain values (parsed from
// flags in server_flags.cc). Torch-free.

#include <cstdint>
#include <string>

#include "core/step_cache.h"
#include "core/worker_options.h"

namespace ditserve::server {

// Step caching of a request that names no method or no threshold, and the
// largest threshold a request may ask for (GetInfo reports them).
struct StepCacheLimits {
  core::StepCacheMethod default_method = core::StepCacheMethod::kNone;
  double default_first_block_threshold = core::DefaultStepCacheThreshold(core::StepCacheMethod::kFirstBlock);
  double max_first_block_threshold = core::MaxStepCacheThreshold(core::StepCacheMethod::kFirstBlock);
  double default_teacache_threshold = core::DefaultStepCacheThreshold(core::StepCacheMethod::kTeaCache);
  double max_teacache_threshold = core::MaxStepCacheThreshold(core::StepCacheMethod::kTeaCache);

  // 0 for kNone.
  double DefaultThreshold(core::StepCacheMethod method) const {
    return method == core::StepCacheMethod::kFirstBlock ? default_first_block_threshold
           : method == core::StepCacheMethod::kTeaCache ? default_teacache_threshold
                                                        : 0;
  }
  double MaxThreshold(core::StepCacheMethod method) const {
    return method == core::StepCacheMethod::kFirstBlock ? max_first_block_threshold
           : method == core::StepCacheMethod::kTeaCache ? max_teacache_threshold
                                                        : 0;
  }
};

// Limits a request is validated against (INVALID_ARGUMENT names the field
// and the limit).
struct Limits {
  int64_t max_pixels = 1024 * 1024;  // height × width
  int max_steps = 100;
  int max_prompt_bytes = 2048;
  int max_images = 4;
  int default_steps = 28;
  StepCacheLimits step_cache;
};

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 50051;          // public gRPC API; 0 picks a free port
  int metrics_port = 9090;   // Prometheus /metrics; 0 picks a free port; -1 disables
  // Where the gang's rank 0 attaches (the internal control API). Port 0
  // picks a free one (spawn mode). Attach mode: workers are given this.
  std::string control_address = "127.0.0.1:0";
  // Prints the ports actually bound as one line of JSON on stdout.
  bool print_ports = false;
  // Who may call (server/public_security.h): TLS files for the public port,
  // the bearer tokens file, and whether GetInfo names the model's path
  // (default: its directory name only).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  std::string auth_tokens_file;
  bool info_model_path = false;
  bool enable_reflection = true;  // gRPC server reflection on the public port

  Limits limits;
  int max_queue_size = 64;
  int max_batch_size = 4;  // images per gang call (docs/serving.md: Batching)
  std::string join_policy = "step";  // step: continuous batching; batch: one batch at a time
  int max_running_requests = 8;      // images in the running set
  double max_join_wait_s = 5;        // an incompatible head waits this long before joins stop
  int join_lookahead = 2;            // images sent ahead of the running set's room
  int max_requests_per_caller = 0;  // per token name, accepted and unfinished; 0: none
  int max_queued_per_caller = 0;    // per token name, waiting; 0: none
  double drain_timeout_s = 30;
  int encode_threads = 2;
  int png_compression_level = 1;  // zlib level of PNG responses (0–9)
  double step_timeout_s = 300;    // no step for this long: the gang is hung

  // The gang. spawn_workers: start W = product of the degrees ranks of
  // worker_binary (default: ditserve-worker next to ditserve-server).
  bool spawn_workers = false;
  // --parallel auto: the planner's choice and why, for the startup log
  // (empty with --parallel manual).
  std::string parallel_choice;
  std::string worker_binary;
  double shutdown_grace_s = 10;
  double restart_backoff_s = 1;
  // The flags every rank gets (parallel degrees, device, model, dtype, ...).
  core::WorkerOptions worker;
};

}  // namespace ditserve::server
