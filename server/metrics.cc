#include "server/metrics.h"

#include <unistd.h>

#include <algorithm>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "proto/grpc_code_names.h"

namespace ditserve::server {
namespace {

// Request-level latencies: 5 ms … 20 min.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600, 1200};
}
// Phase latencies (a step, VAE, encoding): 0.5 ms … 60 s.
prometheus::Histogram::BucketBoundaries PhaseBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& bind,
                                                         const std::string& model,
                                                         const std::string& parallel) {
  std::unique_ptr<Metrics> m(new Metrics());
  m->registry_ = std::make_shared<prometheus::Registry>();
  const prometheus::Labels constant = {{"model", model}, {"parallel", parallel}};
  auto& reg = *m->registry_;
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  m->requests_family_ = &BuildCounter()
                             .Name("ditserve_requests_total")
                             .Help("Generation requests finished, by gRPC status code")
                             .Labels(constant)
                             .Register(reg);
  auto histogram = [&](const char* name, const char* help,
                       const prometheus::Histogram::BucketBoundaries& buckets) {
    return &BuildHistogram().Name(name).Help(help).Labels(constant).Register(reg).Add({}, buckets);
  };
  m->latency_ = histogram("ditserve_request_latency_seconds",
                          "Accepted to response ready, every finished request", LatencyBuckets());
  m->queue_time_ = histogram("ditserve_queue_time_seconds",
                             "Accepted to dispatched to the gang", LatencyBuckets());
  m->denoising_ = histogram("ditserve_denoising_seconds",
                            "The denoising loop of one gang call", LatencyBuckets());
  m->step_ = histogram("ditserve_step_seconds", "One denoising step of the gang", PhaseBuckets());
  m->running_set_ = histogram("ditserve_running_set_size",
                              "Images the gang's running set (or closed batch) held during one step",
                              prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64});
  m->first_step_ = histogram("ditserve_time_to_first_step_seconds",
                             "Accepted to the gang's report of the request's first denoising step", LatencyBuckets());
  m->vae_ = histogram("ditserve_vae_seconds", "VAE decoding of one gang call", PhaseBuckets());
  m->encoding_ = histogram("ditserve_encoding_seconds",
                           "PNG/JPEG/WebP encoding of one request's images", PhaseBuckets());
  auto gauge = [&](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Labels(constant).Register(reg).Add({});
  };
  auto counter = [&](const char* name, const char* help) {
    return &BuildCounter().Name(name).Help(help).Labels(constant).Register(reg).Add({});
  };
  m->queue_depth_ = gauge("ditserve_queue_depth", "Requests waiting in the admission queue");
  m->in_flight_ = gauge("ditserve_requests_in_flight",
                        "Requests accepted and not yet finished (queued, running or encoding)");
  m->images_ = counter("ditserve_images_generated_total", "Images returned to clients");
  m->pixels_ = counter("ditserve_pixels_generated_total", "Pixels of the images returned");
  auto& steps = BuildCounter()
                    .Name("ditserve_denoise_steps_total")
                    .Help("Denoising steps of the images returned, by outcome: computed (the transformer's blocks "
                          "ran) or cached (step caching reused the last computed step's residual)")
                    .Labels(constant)
                    .Register(reg);
  m->steps_computed_ = &steps.Add({{"outcome", "computed"}});
  m->steps_cached_ = &steps.Add({{"outcome", "cached"}});
  m->gang_ready_ = gauge("ditserve_gang_ready", "1 when the gang has loaded the model and is attached");
  m->gang_restarts_ = counter("ditserve_gang_restarts_total", "Times the gang failed and was restarted");
  m->gang_steps_ = counter("ditserve_gang_steps_total",
                           "Denoising steps the gang ran (one per step of its running set or batch; rate() is the "
                           "gang's steps per second)");
  m->comm_bytes_family_ = &BuildCounter()
                               .Name("ditserve_communication_bytes_total")
                               .Help("Bytes rank 0 sent, by parallel method")
                               .Labels(constant)
                               .Register(reg);
  m->comm_seconds_family_ = &BuildCounter()
                                 .Name("ditserve_communication_seconds_total")
                                 .Help("Seconds rank 0 spent communicating, by parallel method")
                                 .Labels(constant)
                                 .Register(reg);
  m->frontend_memory_ = gauge("ditserve_frontend_resident_memory_bytes",
                              "Resident memory of the ditserve-server process");
  m->vae_peak_ = gauge("ditserve_vae_peak_activation_bytes",
                       "Largest VAE activation (feature map) rank 0 held in the last gang call");
  m->gang_memory_ = gauge("ditserve_gang_resident_memory_bytes",
                          "Resident memory of the spawned gang's ranks, summed (0 unless --spawn_workers)");
  // Every request code series exists from the start (at 0), so rates work.
  for (grpc::StatusCode code : {grpc::OK, grpc::CANCELLED, grpc::INVALID_ARGUMENT,
                                grpc::DEADLINE_EXCEEDED, grpc::RESOURCE_EXHAUSTED,
                                grpc::UNAVAILABLE, grpc::INTERNAL}) {
    m->requests_family_->Add({{"code", proto::CodeName(code)}});
  }
  // The parallel methods' series exist from the start too (a gang of one
  // never communicates, and the set of methods is fixed).
  for (const char* method : {"ulysses", "ring", "usp", "pipefusion", "cfg", "data", "control"}) {
    m->comm_bytes_family_->Add({{"method", method}});
    m->comm_seconds_family_->Add({{"method", method}});
  }
  if (!bind.empty()) {
    try {
      m->exposer_ = std::make_unique<prometheus::Exposer>(bind);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", bind, ": ", e.what()));
    }
    m->exposer_->RegisterCollectable(m->registry_);
    const std::vector<int> ports = m->exposer_->GetListeningPorts();
    m->port_ = ports.empty() ? 0 : ports.front();
  }
  return m;
}

void Metrics::RequestFinished(grpc::StatusCode code, double latency_s) {
  requests_family_->Add({{"code", proto::CodeName(code)}}).Increment();
  latency_->Observe(latency_s);
}

void Metrics::CommTotals(uint64_t gang_id, const std::string& method, double bytes,
                         double seconds) {
  absl::MutexLock lock(&mu_);
  Last& last = comm_last_[method];
  if (last.gang_id != gang_id) last = Last{gang_id, 0, 0};
  if (bytes > last.bytes) comm_bytes_family_->Add({{"method", method}}).Increment(bytes - last.bytes);
  if (seconds > last.seconds) {
    comm_seconds_family_->Add({{"method", method}}).Increment(seconds - last.seconds);
  }
  last.bytes = std::max(last.bytes, bytes);
  last.seconds = std::max(last.seconds, seconds);
}

void Metrics::SetMemory(double frontend_bytes, double gang_bytes) {
  frontend_memory_->Set(frontend_bytes);
  gang_memory_->Set(gang_bytes);
}

double ResidentBytes(int pid) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/statm") : absl::StrCat("/proc/", pid, "/statm"));
  long long size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

}  // namespace ditserve::server
