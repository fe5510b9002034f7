#pragma once

// Every Prometheus metric of ditserve-server, built once at start-up and
// exported on --metrics_port at /metrics (prometheus-cpp's pull exposer).
// Names follow Prometheus conventions: base units (seconds, bytes),
// counters end in _total. Every series carries the constant labels model
// (the model directory's base name) and parallel (e.g.
// "dp1_cfg1_pp1_u2_r1"); the only other labels are `code` (a gRPC status
// code name, 17 values) and `method` (a parallel method name, 7 values) —
// no unbounded label values. Thread-safe: prometheus-cpp metrics are atomic.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/status.h"

namespace ditserve::server {

class Metrics {
 public:
  // Builds every family. `bind` ("0.0.0.0:9090"; port 0 picks one; empty:
  // no HTTP endpoint, the registry is still kept for tests).
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& bind,
                                                         const std::string& model,
                                                         const std::string& parallel);
  // The port /metrics listens on (0 when none).
  int port() const { return port_; }

  void RequestFinished(grpc::StatusCode code, double latency_s);
  void QueueTime(double seconds) { queue_time_->Observe(seconds); }
  void Denoising(double seconds) { denoising_->Observe(seconds); }
  void Step(double seconds) { step_->Observe(seconds); }
  // One step of the gang over `images` images (its running set or batch).
  void GangStep(int images) {
    gang_steps_->Increment();
    running_set_->Observe(images);
  }
  void TimeToFirstStep(double seconds) { first_step_->Observe(seconds); }
  void Vae(double seconds) { vae_->Observe(seconds); }
  // Rank 0's largest VAE activation in the last gang call (bytes).
  void SetVaePeakActivation(double bytes) { vae_peak_->Set(bytes); }
  void Encoding(double seconds) { encoding_->Observe(seconds); }
  void SetQueueDepth(int n) { queue_depth_->Set(n); }
  void SetInFlight(int n) { in_flight_->Set(n); }
  void ImagesGenerated(int images, double pixels) {
    images_->Increment(images);
    pixels_->Increment(pixels);
  }
  // One finished request's denoising steps over its images: the steps that
  // ran the transformer's blocks and the steps step caching skipped.
  void DenoiseSteps(int computed, int cached) {
    steps_computed_->Increment(computed);
    steps_cached_->Increment(cached);
  }
  void SetGangReady(bool ready) { gang_ready_->Set(ready ? 1 : 0); }
  void GangRestarted() { gang_restarts_->Increment(); }
  // Cumulative per-method totals reported by one gang (`gang_id`); the
  // counters grow by the difference since the last report of that gang.
  void CommTotals(uint64_t gang_id, const std::string& method, double bytes, double seconds);
  // Resident memory of the frontend and of the gang's ranks (bytes).
  void SetMemory(double frontend_bytes, double gang_bytes);

 private:
  Metrics() = default;

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  prometheus::Family<prometheus::Counter>* requests_family_ = nullptr;
  prometheus::Histogram* latency_ = nullptr;
  prometheus::Histogram* queue_time_ = nullptr;
  prometheus::Histogram* denoising_ = nullptr;
  prometheus::Histogram* step_ = nullptr;
  prometheus::Histogram* running_set_ = nullptr;
  prometheus::Histogram* first_step_ = nullptr;
  prometheus::Counter* gang_steps_ = nullptr;
  prometheus::Histogram* vae_ = nullptr;
  prometheus::Histogram* encoding_ = nullptr;
  prometheus::Gauge* queue_depth_ = nullptr;
  prometheus::Gauge* vae_peak_ = nullptr;
  prometheus::Gauge* in_flight_ = nullptr;
  prometheus::Counter* images_ = nullptr;
  prometheus::Counter* pixels_ = nullptr;
  prometheus::Counter* steps_computed_ = nullptr;
  prometheus::Counter* steps_cached_ = nullptr;
  prometheus::Gauge* gang_ready_ = nullptr;
  prometheus::Counter* gang_restarts_ = nullptr;
  prometheus::Family<prometheus::Counter>* comm_bytes_family_ = nullptr;
  prometheus::Family<prometheus::Counter>* comm_seconds_family_ = nullptr;
  prometheus::Gauge* frontend_memory_ = nullptr;
  prometheus::Gauge* gang_memory_ = nullptr;

  absl::Mutex mu_;
  struct Last {
    uint64_t gang_id = 0;
    double bytes = 0, seconds = 0;
  };
  std::map<std::string, Last> comm_last_ ABSL_GUARDED_BY(mu_);
};

// Resident set size of process `pid` (0: this process) from /proc, in bytes;
// 0 when it cannot be read.
double ResidentBytes(int pid);

}  // namespace ditserve::server
