#include "server/server_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "parallel/parallel_config.h"
#include "core/step_cache.h"
#include "core/worker_flags.h"
#include "planner/auto_parallel.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address the public gRPC API listens on");
ABSL_FLAG(int, port, 50051, "Port of the public gRPC API (0: pick a free one)");
ABSL_FLAG(int, metrics_port, 9090,
          "Port of the Prometheus endpoint /metrics (0: pick a free one; -1: none)");
ABSL_FLAG(std::string, control_listen, "127.0.0.1:0",
          "host:port of the internal control service that rank 0 of the gang attaches to "
          "(port 0: pick a free one; spawn mode passes it to the ranks)");
ABSL_FLAG(bool, print_ports, false,
          "Print the bound ports as one JSON line on stdout once listening");
ABSL_FLAG(int64_t, max_pixels, 1024 * 1024, "Largest height x width of a request");
ABSL_FLAG(int, max_steps, 100, "Largest num_inference_steps of a request");
ABSL_FLAG(int, max_prompt_bytes, 2048, "Largest prompt (and negative prompt) in bytes");
ABSL_FLAG(int, max_images, 4, "Largest num_images of a request");
ABSL_FLAG(int, default_steps, 28, "num_inference_steps when a request leaves it 0");
ABSL_FLAG(std::string, default_step_cache, "none",
          "Step caching of a request that leaves step_cache unspecified: none, first_block or teacache");
ABSL_FLAG(double, default_first_block_threshold,
          ditserve::core::DefaultStepCacheThreshold(ditserve::core::StepCacheMethod::kFirstBlock),
          "First-Block-Cache threshold of a request that names none");
ABSL_FLAG(double, max_first_block_threshold,
          ditserve::core::MaxStepCacheThreshold(ditserve::core::StepCacheMethod::kFirstBlock),
          "Largest First-Block-Cache threshold a request may ask for");
ABSL_FLAG(double, default_teacache_threshold,
          ditserve::core::DefaultStepCacheThreshold(ditserve::core::StepCacheMethod::kTeaCache),
          "TeaCache threshold of a request that names none");
ABSL_FLAG(double, max_teacache_threshold,
          ditserve::core::MaxStepCacheThreshold(ditserve::core::StepCacheMethod::kTeaCache),
          "Largest TeaCache threshold a request may ask for");
ABSL_FLAG(int, max_queue_size, 64,
          "Requests waiting for the gang beyond which new ones get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_batch_size, 4,
          "Images (of compatible requests) the gang draws in one call");
ABSL_FLAG(std::string, join_policy, "step",
          "step: requests join the gang's running set between denoising steps (continuous batching; a gang "
          "without PipeFusion, requests without a step cache); batch: the next batch starts when the gang is idle");
ABSL_FLAG(int, max_running_requests, 8,
          "Images in the gang's running set at once (--join_policy step; a request of more images still starts "
          "an empty set)");
ABSL_FLAG(int, join_lookahead, 2,
          "Step joins: images sent to the gang beyond --max_running_requests; they wait there, their prompts "
          "encoded, and join as members leave (0: a freed slot waits for the frontend's next join)");
ABSL_FLAG(double, max_join_wait_s, 5,
          "Seconds a queued request that cannot share the running set (another size or max_sequence_length, or "
          "a step cache) waits before joins stop so the set drains and it runs");
ABSL_FLAG(double, drain_timeout, 30,
          "Seconds that requests in flight get to finish after SIGTERM");
ABSL_FLAG(int, encode_threads, 2, "Threads encoding PNG/JPEG/WebP in the frontend");
ABSL_FLAG(int, png_compression_level, 1,
          "zlib level of PNG responses: 0 (stored, fastest) … 9 (smallest); 1 is fast and "
          "compresses smooth images well");
ABSL_FLAG(double, step_timeout_s, 300,
          "A running batch with no denoising step for this long means a hung gang: its requests "
          "end UNAVAILABLE and the gang is restarted (spawn mode) or detached");
ABSL_FLAG(bool, spawn_workers, false,
          "Start the gang's ranks as child processes (else ranks started separately attach to "
          "--control_listen)");
ABSL_FLAG(std::string, worker_binary, "",
          "Path of ditserve-worker for --spawn_workers (default: next to ditserve-server)");
ABSL_FLAG(double, shutdown_grace_s, 10,
          "When the gang is stopped, seconds between SIGTERM and SIGKILL for its ranks");
ABSL_FLAG(double, restart_backoff_s, 1,
          "Seconds before restarting a failed gang (doubles per failure in a row, up to 30)");
ABSL_FLAG(int, nproc, 0,
          "Ranks of the spawned gang (as ditserve-run; 0: the product of the parallel degrees)");
ABSL_FLAG(std::string, parallel, "manual",
          "manual: the degree flags; auto: the planner picks the degrees for --nproc ranks from --hardware, "
          "for a request of the model's default size and --default_steps (logged with its prediction)");
ABSL_FLAG(std::string, hardware, "", "Hardware profile for --parallel auto (hardware/*.json)");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of the public gRPC port: with --tls_key_file the port speaks TLS only");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CAs that must have signed every client's certificate (mTLS; needs --tls_cert_file)");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "File of accepted bearer tokens, one per line (optionally followed by the caller's name); every "
          "GenerationService call then needs 'authorization: Bearer <token>'. Re-read on change and on SIGHUP. "
          "Health and reflection stay open");
ABSL_FLAG(int, max_requests_per_caller, 0,
          "With --auth_tokens_file: requests one caller (token name) may have accepted and unfinished; beyond, "
          "RESOURCE_EXHAUSTED (0: no limit)");
ABSL_FLAG(int, max_queued_per_caller, 0,
          "With --auth_tokens_file: requests one caller may have waiting in the queue, so one caller cannot fill it "
          "(0: no limit)");
ABSL_FLAG(bool, enable_reflection, true,
          "Serve gRPC server reflection on the public port (grpcurl lists the API); false removes it. Reflection "
          "and health take no bearer token");
ABSL_FLAG(bool, info_model_path, false,
          "GetInfo.model is the model directory's path (default: its name only, so callers do not learn the "
          "server's filesystem)");

namespace ditserve::server {
namespace {

absl::Status Range(const char* flag, double value, double lo, double hi) {
  if (!(value >= lo && value <= hi)) {  // NaN too
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServerOptions> ServerOptionsFromFlags() {
  ServerOptions o;
  o.host = absl::GetFlag(FLAGS_host);
  o.port = absl::GetFlag(FLAGS_port);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  o.control_address = absl::GetFlag(FLAGS_control_listen);
  o.print_ports = absl::GetFlag(FLAGS_print_ports);
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  o.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  o.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  o.info_model_path = absl::GetFlag(FLAGS_info_model_path);
  o.enable_reflection = absl::GetFlag(FLAGS_enable_reflection);
  o.max_requests_per_caller = absl::GetFlag(FLAGS_max_requests_per_caller);
  o.max_queued_per_caller = absl::GetFlag(FLAGS_max_queued_per_caller);
  o.limits.max_pixels = absl::GetFlag(FLAGS_max_pixels);
  o.limits.max_steps = absl::GetFlag(FLAGS_max_steps);
  o.limits.max_prompt_bytes = absl::GetFlag(FLAGS_max_prompt_bytes);
  o.limits.max_images = absl::GetFlag(FLAGS_max_images);
  o.limits.default_steps = absl::GetFlag(FLAGS_default_steps);
  auto method = core::ParseStepCacheMethod(absl::GetFlag(FLAGS_default_step_cache));
  if (!method.ok()) return absl::InvalidArgumentError(absl::StrCat("--default_step_cache: ", method.status().message()));
  o.limits.step_cache.default_method = *method;
  o.limits.step_cache.default_first_block_threshold = absl::GetFlag(FLAGS_default_first_block_threshold);
  o.limits.step_cache.max_first_block_threshold = absl::GetFlag(FLAGS_max_first_block_threshold);
  o.limits.step_cache.default_teacache_threshold = absl::GetFlag(FLAGS_default_teacache_threshold);
  o.limits.step_cache.max_teacache_threshold = absl::GetFlag(FLAGS_max_teacache_threshold);
  o.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  o.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  o.join_policy = absl::GetFlag(FLAGS_join_policy);
  o.max_running_requests = absl::GetFlag(FLAGS_max_running_requests);
  o.max_join_wait_s = absl::GetFlag(FLAGS_max_join_wait_s);
  o.join_lookahead = absl::GetFlag(FLAGS_join_lookahead);
  o.drain_timeout_s = absl::GetFlag(FLAGS_drain_timeout);
  o.encode_threads = absl::GetFlag(FLAGS_encode_threads);
  o.png_compression_level = absl::GetFlag(FLAGS_png_compression_level);
  o.step_timeout_s = absl::GetFlag(FLAGS_step_timeout_s);
  o.spawn_workers = absl::GetFlag(FLAGS_spawn_workers);
  o.worker_binary = absl::GetFlag(FLAGS_worker_binary);
  o.shutdown_grace_s = absl::GetFlag(FLAGS_shutdown_grace_s);
  o.restart_backoff_s = absl::GetFlag(FLAGS_restart_backoff_s);
  o.worker = core::WorkerOptionsFromFlags();

  const struct {
    const char* flag;
    double value, lo, hi;
  } checks[] = {
      {"port", double(o.port), 0, 65535},
      {"metrics_port", double(o.metrics_port), -1, 65535},
      {"max_pixels", double(o.limits.max_pixels), 256, 8192.0 * 8192.0},
      {"max_steps", double(o.limits.max_steps), 1, 1000},
      {"max_prompt_bytes", double(o.limits.max_prompt_bytes), 1, 1 << 20},
      {"max_images", double(o.limits.max_images), 1, 64},
      {"default_steps", double(o.limits.default_steps), 1, double(o.limits.max_steps)},
      {"max_queue_size", double(o.max_queue_size), 0, 1 << 20},
      {"max_batch_size", double(o.max_batch_size), 1, 256},
      {"max_running_requests", double(o.max_running_requests), 1, 256},
      {"max_join_wait_s", o.max_join_wait_s, 0, 86400},
      {"join_lookahead", double(o.join_lookahead), 0, 64},
      {"max_requests_per_caller", double(o.max_requests_per_caller), 0, 1 << 20},
      {"max_queued_per_caller", double(o.max_queued_per_caller), 0, 1 << 20},
      {"drain_timeout", o.drain_timeout_s, 0, 86400},
      {"encode_threads", double(o.encode_threads), 1, 256},
      {"png_compression_level", double(o.png_compression_level), 0, 9},
      {"step_timeout_s", o.step_timeout_s, 0.1, 86400},
      {"shutdown_grace_s", o.shutdown_grace_s, 0, 3600},
      {"restart_backoff_s", o.restart_backoff_s, 0, 3600},
      {"max_first_block_threshold", o.limits.step_cache.max_first_block_threshold, 0,
       core::MaxStepCacheThreshold(core::StepCacheMethod::kFirstBlock)},
      {"default_first_block_threshold", o.limits.step_cache.default_first_block_threshold, 0,
       o.limits.step_cache.max_first_block_threshold},
      {"max_teacache_threshold", o.limits.step_cache.max_teacache_threshold, 0,
       core::MaxStepCacheThreshold(core::StepCacheMethod::kTeaCache)},
      {"default_teacache_threshold", o.limits.step_cache.default_teacache_threshold, 0,
       o.limits.step_cache.max_teacache_threshold},
  };
  for (const auto& c : checks) {
    if (absl::Status s = Range(c.flag, c.value, c.lo, c.hi); !s.ok()) return s;
  }
  if (o.join_policy != "step" && o.join_policy != "batch") {
    return absl::InvalidArgumentError(absl::StrCat("--join_policy must be step or batch, got '", o.join_policy, "'"));
  }
  if ((o.max_requests_per_caller > 0 || o.max_queued_per_caller > 0) && o.auth_tokens_file.empty()) {
    return absl::InvalidArgumentError(
        "--max_requests_per_caller and --max_queued_per_caller limit named callers: they need --auth_tokens_file");
  }
  const int nproc = absl::GetFlag(FLAGS_nproc);
  const std::string parallel_mode = absl::GetFlag(FLAGS_parallel);
  if (parallel_mode != "manual" && parallel_mode != "auto") {
    return absl::InvalidArgumentError(absl::StrCat("--parallel must be manual or auto, got '", parallel_mode, "'"));
  }
  if (parallel_mode == "auto") {
    if (!(o.worker.parallel == parallel::ParallelConfig{})) {
      return absl::InvalidArgumentError(
          "--parallel auto chooses the degrees: drop --ulysses_degree, --ring_degree, --pipefusion_parallel_degree, "
          "--use_cfg_parallel and --data_parallel_degree");
    }
    if (!o.spawn_workers || o.worker.generation.model.empty() || nproc < 1) {
      return absl::InvalidArgumentError("--parallel auto needs --spawn_workers, --model and --nproc N");
    }
    planner::AutoParallelRequest a;
    a.model_dir = o.worker.generation.model;
    a.hardware_path = absl::GetFlag(FLAGS_hardware);
    a.world_size = nproc;
    a.steps = o.limits.default_steps;
    a.pipefusion = o.worker.pipefusion;
    a.parallel_vae = o.worker.generation.vae.parallel;
    auto choice = planner::ChooseParallelConfig(a);
    if (!choice.ok()) return choice.status();
    o.worker.parallel = choice->config;
    o.parallel_choice = absl::StrCat("--parallel auto chose ", choice->config.ToString(), " (", choice->why, ")");
  } else if (!absl::GetFlag(FLAGS_hardware).empty()) {
    return absl::InvalidArgumentError("--hardware is for --parallel auto");
  }
  const long long world = o.worker.parallel.world_size();
  if (nproc != 0 && nproc != world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--nproc ", nproc, " must equal the product of the parallel degrees (", world, ")"));
  }
  if (world < 1 || world > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("the gang size (product of the parallel degrees) must be in [1, 4096], got ", world));
  }
  if (o.spawn_workers && o.worker.generation.model.empty()) {
    return absl::InvalidArgumentError("--model is required with --spawn_workers");
  }
  if (o.spawn_workers) {
    // What every rank would check after starting (model configs, degrees).
    if (absl::Status s = core::ValidateServing(o.worker); !s.ok()) return s;
  }
  return o;
}

}  // namespace ditserve::server
