// ditserve-server: the gRPC frontend. Composition root: parse flags, build
// the metrics, the dispatcher, the control service (where the gang's rank 0
// attaches) and the public service, optionally spawn the gang, then wait
// for SIGTERM/SIGINT and drain. Torch-free.

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/dispatcher.h"
#include "server/gang_link.h"
#include "server/gang_supervisor.h"
#include "server/generation_service.h"
#include "server/metrics.h"
#include "server/server_flags.h"

namespace {

volatile std::sig_atomic_t g_signal = 0;  // written by the handler only
void OnSignal(int sig) { g_signal = sig; }
// A builder option that removes one plugin (by name) from the builder.
class WithoutPlugin final : public grpc::ServerBuilderOption {
 public:
  explicit WithoutPlugin(std::string name) : name_(std::move(name)) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [&](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) { return p->name() == name_; }),
                   plugins->end());
  }

 private:
  const std::string name_;
};

volatile std::sig_atomic_t g_reload = 0;  // SIGHUP: re-read the tokens file
void OnHangup(int) { g_reload = 1; }

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "ditserve-server: %s\n", message.c_str());
  return code;
}

constexpr char kServiceName[] = "ditserve.v1.GenerationService";

// Health of "" and of the service name, applied once the server exists.
class Health {
 public:
  void Set(bool serving) {
    absl::MutexLock lock(&mu_);
    serving_ = serving;
    Apply();
  }
  void Attach(grpc::HealthCheckServiceInterface* service) {
    absl::MutexLock lock(&mu_);
    service_ = service;
    Apply();
  }

 private:
  void Apply() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (service_ == nullptr) return;
    service_->SetServingStatus("", serving_);
    service_->SetServingStatus(kServiceName, serving_);
  }
  absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  grpc::HealthCheckServiceInterface* service_ ABSL_GUARDED_BY(mu_) = nullptr;
};

std::string Basename(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "The ditserve gRPC frontend. One-machine CPU example:\n"
      "  ditserve-server --model build/flux-tiny --spawn_workers --device cpu --port 50051");
  absl::ParseCommandLine(argc, argv);
  auto parsed = ditserve::server::ServerOptionsFromFlags();
  if (!parsed.ok()) return Fail(2, std::string(parsed.status().message()));
  const ditserve::server::ServerOptions options = *std::move(parsed);
  namespace server = ditserve::server;
  if (!options.parallel_choice.empty()) std::fprintf(stderr, "ditserve-server: %s\n", options.parallel_choice.c_str());

  const std::string parallel = absl::StrCat(
      "dp", options.worker.parallel.data_parallel_degree, "_cfg",
      options.worker.parallel.use_cfg_parallel ? 2 : 1, "_pp",
      options.worker.parallel.pipefusion_parallel_degree, "_u",
      options.worker.parallel.ulysses_degree, "_r", options.worker.parallel.ring_degree);
  auto metrics = server::Metrics::Create(
      options.metrics_port < 0 ? "" : absl::StrCat(options.host, ":", options.metrics_port),
      options.worker.generation.model.empty() ? "unknown" : Basename(options.worker.generation.model), parallel);
  if (!metrics.ok()) return Fail(1, std::string(metrics.status().message()));

  Health health;
  server::DispatcherOptions dopt;
  dopt.limits = options.limits;
  dopt.max_queue_size = options.max_queue_size;
  dopt.max_batch_size = options.max_batch_size;
  dopt.join_policy = options.join_policy;
  dopt.max_running_images = options.max_running_requests;
  dopt.max_join_wait = absl::Seconds(options.max_join_wait_s);
  dopt.join_lookahead_images = options.join_lookahead;
  dopt.max_requests_per_caller = options.max_requests_per_caller;
  dopt.max_queued_per_caller = options.max_queued_per_caller;
  dopt.encode_threads = options.encode_threads;
  dopt.png_compression_level = options.png_compression_level;
  dopt.step_timeout = absl::Seconds(options.step_timeout_s);
  // The dispatcher, the control service and the supervisor refer to each
  // other: `link` and `supervisor` are set before any thread can use them
  // (the gang can attach only once the control server runs, below).
  server::GangLink* link = nullptr;
  std::unique_ptr<server::GangSupervisor> supervisor;
  auto dispatcher = std::make_unique<server::Dispatcher>(
      dopt, **metrics, [&health](bool serving) { health.Set(serving); },
      [&](const absl::Status& why) {
        std::fprintf(stderr, "ditserve-server: %s\n", std::string(why.message()).c_str());
        link->DropCurrent();
        if (supervisor) supervisor->Restart();
      });
  server::GangLink gang_link(dispatcher.get());
  link = &gang_link;
  dispatcher->SetChannel(link);
  if (options.spawn_workers) {
    supervisor = std::make_unique<server::GangSupervisor>(
        options,
        [&](const absl::Status& why) {
          link->DropCurrent();
          dispatcher->OnDetach(0, why);
        },
        [&] { (*metrics)->GangRestarted(); });
  }

  // The internal control service: its own port, never the public one.
  int control_port = 0;
  grpc::ServerBuilder control_builder;
  control_builder.AddListeningPort(options.control_address, grpc::InsecureServerCredentials(),
                                   &control_port);
  control_builder.RegisterService(link);
  control_builder.SetMaxReceiveMessageSize(1 << 30);  // raw RGB images of a batch
  control_builder.SetMaxSendMessageSize(64 << 20);
  std::unique_ptr<grpc::Server> control_server = control_builder.BuildAndStart();
  if (control_server == nullptr || control_port == 0) {
    return Fail(1, absl::StrCat("cannot listen on --control_listen ", options.control_address));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<server::BearerTokens> tokens;
  if (!options.auth_tokens_file.empty()) {
    auto loaded = server::BearerTokens::Load(options.auth_tokens_file);
    if (!loaded.ok()) return Fail(2, std::string(loaded.status().message()));
    tokens = *std::move(loaded);
  }
  auto credentials = server::PublicServerCredentials(
      {options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file});
  if (!credentials.ok()) {
    return Fail(credentials.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                std::string(credentials.status().message()));
  }
  server::GenerationService service(dispatcher.get(), options, tokens.get());
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options.host, ":", options.port), *credentials, &port);
  builder.RegisterService(&service);
  // grpc++_reflection registers its plugin with every builder when it is
  // linked; --enable_reflection=false takes it out of this one.
  if (!options.enable_reflection) builder.SetOption(std::make_unique<WithoutPlugin>("proto_server_reflection"));
  builder.SetMaxReceiveMessageSize(4 << 20);  // requests are prompts and numbers
  builder.SetMaxSendMessageSize(1 << 30);     // responses carry encoded images
  std::unique_ptr<grpc::Server> public_server = builder.BuildAndStart();
  if (public_server == nullptr || port == 0) {
    return Fail(1, absl::StrCat("cannot listen on ", options.host, ":", options.port));
  }
  health.Attach(public_server->GetHealthCheckService());

  const std::string control_host = options.control_address.substr(0, options.control_address.rfind(':'));
  const std::string control_address = absl::StrCat(
      control_host == "0.0.0.0" || control_host == "[::]" ? "127.0.0.1" : control_host, ":",
      control_port);
  if (supervisor) supervisor->Start(control_address);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGHUP, OnHangup);
  std::fprintf(stderr,
               "ditserve-server: serving on %s:%d, /metrics on port %d, control %s (%s)\n",
               options.host.c_str(), port, (*metrics)->port(), control_address.c_str(),
               options.spawn_workers ? "spawning the gang" : "waiting for the gang to attach");
  if (options.print_ports) {
    std::printf("{\"port\": %d, \"metrics_port\": %d, \"control_port\": %d}\n", port,
                (*metrics)->port(), control_port);
    std::fflush(stdout);
  }

  absl::Time next_sample = absl::Now();
  while (g_signal == 0) {
    if (g_reload != 0) {
      g_reload = 0;
      if (tokens) {
        const absl::Status reloaded = tokens->Reload();
        std::fprintf(stderr, "ditserve-server: SIGHUP: %s\n",
                     reloaded.ok() ? "re-read --auth_tokens_file"
                                   : absl::StrCat(reloaded.message(), " (kept the previous tokens)").c_str());
      }
    }
    if (absl::Now() >= next_sample) {
      (*metrics)->SetMemory(server::ResidentBytes(0),
                            supervisor ? supervisor->gang_resident_bytes() : 0);
      next_sample = absl::Now() + absl::Seconds(1);
    }
    absl::SleepFor(absl::Milliseconds(20));
  }

  // Drain: NOT_SERVING, refuse new requests, let those in flight finish.
  std::fprintf(stderr, "ditserve-server: signal %d: draining (up to %.0f s)\n",
               static_cast<int>(g_signal), options.drain_timeout_s);
  dispatcher->StartDraining();
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(options.drain_timeout_s);
  while (dispatcher->Outstanding() > 0 && absl::Now() < drain_deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const int left = dispatcher->Outstanding();
  if (left > 0) {
    std::fprintf(stderr, "ditserve-server: drain timeout: %d requests end with UNAVAILABLE\n", left);
    dispatcher->FailAll(absl::UnavailableError("the server shut down before the request finished"));
  }
  public_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (supervisor) supervisor->Stop();
  control_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  dispatcher.reset();
  std::fprintf(stderr, "ditserve-server: stopped\n");
  return 0;
}
