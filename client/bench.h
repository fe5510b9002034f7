#pragma once

// The load generator of `ditserve-client bench`. Closed loop (rate 0):
// `concurrency` callers each send one Generate at a time, back to back,
// until `requests` have been sent or `duration` has passed. Open loop
// (rate > 0): requests arrive as a Poisson process at `rate` per second
// (seeded, so a run can be repeated), each sent at its arrival time however
// many are outstanding; its latency counts from that arrival time, so a
// server that falls behind shows it (no coordinated omission). Torch-free.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "ditserve/v1/generation.grpc.pb.h"

namespace ditserve::client {

struct BenchOptions {
  int concurrency = 1;  // closed loop only
  double rate = 0;      // > 0: open loop at this many requests per second
  uint64_t arrival_seed = 1;
  int requests = 0;                           // 0: until `duration`
  absl::Duration duration = absl::Seconds(10);  // used when requests == 0
  absl::Duration deadline = absl::Seconds(600);
  v1::GenerateRequest request;  // every call sends this (seed i for call i)
};

struct BenchResult {
  int sent = 0;
  int ok = 0;
  std::map<std::string, int> errors;  // gRPC code name → count
  double wall_s = 0;
  double offered_rps = 0;  // open loop: requests sent / the last arrival time
  double throughput_rps = 0;  // successful requests per second
  double images_per_s = 0;
  // Successful requests only, in seconds.
  std::vector<double> latency_s;   // client-measured end to end
  std::vector<double> overhead_s;  // latency minus the gang's time (timings.gang_s)
  std::vector<double> gang_s;
  std::vector<double> queued_s;  // timings.queued_s: waiting for the gang
  // Where the overhead goes (they and queued_s sum to overhead_s):
  std::vector<double> encoding_s;   // timings.encoding_s: PNG/JPEG/WebP in the frontend
  std::vector<double> dispatch_s;   // total − queued − gang − encoding: hand-offs inside the server
  std::vector<double> transport_s;  // latency − total: gRPC and the network, both ways
};

// Runs the load against `channel`. Thread-safe with respect to the channel.
BenchResult RunBench(const std::shared_ptr<grpc::Channel>& channel, const BenchOptions& options);

// Arrival times (seconds from the start, increasing) of a Poisson process
// at `rate` per second from `seed`: the first `count`, or (count 0) every
// one before `duration_s`.
std::vector<double> PoissonArrivals(double rate, int count, double duration_s, uint64_t seed);

// The q-quantile (0..1) of `values` by linear interpolation; 0 when empty.
double Quantile(std::vector<double> values, double q);

// Adds one OK response, measured `latency_s` end to end by the client, to
// `result`: its latency, the response's timings and the overhead split.
void RecordSuccess(BenchResult& result, double latency_s, const v1::GenerateResponse& response);

// Human-readable table, and one JSON object.
std::string FormatBench(const BenchOptions& options, const BenchResult& result);
std::string FormatBenchJson(const BenchOptions& options, const BenchResult& result);

}  // namespace ditserve::client
