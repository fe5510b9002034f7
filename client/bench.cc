#include "client/bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "proto/grpc_code_names.h"

namespace ditserve::client {

double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double pos = q * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (pos - static_cast<double>(lo));
}

void RecordSuccess(BenchResult& result, double latency_s, const v1::GenerateResponse& response) {
  const v1::Timings& t = response.timings();
  ++result.ok;
  result.latency_s.push_back(latency_s);
  result.gang_s.push_back(t.gang_s());
  result.queued_s.push_back(t.queued_s());
  result.overhead_s.push_back(latency_s - t.gang_s());
  result.encoding_s.push_back(t.encoding_s());
  result.dispatch_s.push_back(t.total_s() - t.queued_s() - t.gang_s() - t.encoding_s());
  result.transport_s.push_back(latency_s - t.total_s());
  result.images_per_s += response.images_size();  // a total until RunBench divides it
}

std::vector<double> PoissonArrivals(double rate, int count, double duration_s, uint64_t seed) {
  std::vector<double> t;
  if (!(rate > 0)) return t;
  std::mt19937_64 engine(seed);
  std::exponential_distribution<double> gap(rate);
  double now = 0;
  while (true) {
    now += gap(engine);
    if (count > 0 ? static_cast<int>(t.size()) >= count : now >= duration_s) break;
    t.push_back(now);
  }
  return t;
}

namespace {

// One open-loop call: its state lives until its completion callback.
struct OpenCall {
  grpc::ClientContext context;
  v1::GenerateRequest request;
  v1::GenerateResponse response;
  absl::Time arrival;
};

BenchResult RunOpenLoop(v1::GenerationService::Stub& stub, const BenchOptions& options) {
  const std::vector<double> arrivals = PoissonArrivals(options.rate, options.requests,
                                                       absl::ToDoubleSeconds(options.duration), options.arrival_seed);
  absl::Mutex mu;
  BenchResult result;
  int outstanding = 0;
  std::vector<std::unique_ptr<OpenCall>> calls;
  const absl::Time start = absl::Now();
  for (size_t i = 0; i < arrivals.size(); ++i) {
    auto call = std::make_unique<OpenCall>();
    call->arrival = start + absl::Seconds(arrivals[i]);
    absl::SleepFor(call->arrival - absl::Now());  // no-op when late
    call->request = options.request;
    if (!call->request.has_seed()) call->request.set_seed(static_cast<uint64_t>(i));
    call->context.set_deadline(absl::ToChronoTime(call->arrival + options.deadline));
    OpenCall* c = call.get();
    {
      absl::MutexLock lock(&mu);
      ++outstanding;
      ++result.sent;
    }
    stub.async()->Generate(&c->context, &c->request, &c->response, [&, c](grpc::Status status) {
      const double latency = absl::ToDoubleSeconds(absl::Now() - c->arrival);
      absl::MutexLock lock(&mu);
      if (status.ok()) {
        RecordSuccess(result, latency, c->response);
      } else {
        ++result.errors[proto::CodeName(status.error_code())];
      }
      --outstanding;
    });
    calls.push_back(std::move(call));
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(+[](int* n) { return *n == 0; }, &outstanding));
  }
  result.wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  result.offered_rps = arrivals.empty() ? 0 : static_cast<double>(arrivals.size()) / arrivals.back();
  result.throughput_rps = result.wall_s > 0 ? result.ok / result.wall_s : 0;
  result.images_per_s = result.wall_s > 0 ? result.images_per_s / result.wall_s : 0;
  return result;
}

}  // namespace

BenchResult RunBench(const std::shared_ptr<grpc::Channel>& channel, const BenchOptions& options) {
  auto stub = v1::GenerationService::NewStub(channel);
  if (options.rate > 0) return RunOpenLoop(*stub, options);
  std::atomic<int> next{0};
  absl::Mutex mu;
  BenchResult result;
  const absl::Time start = absl::Now();
  const absl::Time stop_at = start + options.duration;
  auto caller = [&] {
    while (true) {
      const int i = next.fetch_add(1);
      if (options.requests > 0 ? i >= options.requests : absl::Now() >= stop_at) return;
      v1::GenerateRequest request = options.request;
      if (!request.has_seed()) request.set_seed(static_cast<uint64_t>(i));
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + options.deadline));
      v1::GenerateResponse response;
      const absl::Time t0 = absl::Now();
      const grpc::Status status = stub->Generate(&context, request, &response);
      const double latency = absl::ToDoubleSeconds(absl::Now() - t0);
      absl::MutexLock lock(&mu);
      ++result.sent;
      if (status.ok()) {
        RecordSuccess(result, latency, response);
      } else {
        ++result.errors[proto::CodeName(status.error_code())];
      }
    }
  };
  std::vector<std::thread> threads;
  for (int c = 0; c < options.concurrency; ++c) threads.emplace_back(caller);
  for (std::thread& t : threads) t.join();
  result.wall_s = absl::ToDoubleSeconds(absl::Now() - start);
  result.throughput_rps = result.wall_s > 0 ? result.ok / result.wall_s : 0;
  result.images_per_s = result.wall_s > 0 ? result.images_per_s / result.wall_s : 0;
  return result;
}

std::string FormatBench(const BenchOptions& options, const BenchResult& r) {
  auto ms = [](double s) { return s * 1000; };
  std::string out = options.rate > 0 ? absl::StrFormat("open loop at %.3f req/s (Poisson, seed %d; offered %.3f): ",
                                                       options.rate, options.arrival_seed, r.offered_rps)
                                     : absl::StrFormat("concurrency %d: ", options.concurrency);
  absl::StrAppend(&out, absl::StrFormat(
      "%d sent, %d ok, %d failed in %.2f s\n"
      "throughput   %.2f req/s, %.2f images/s\n"
      "latency      p50 %.1f ms  p90 %.1f ms  p99 %.1f ms\n"
      "gang time    p50 %.1f ms  p99 %.1f ms\n"
      "overhead     p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  (latency - gang time)\n"
      "queue wait   p50 %.1f ms  p99 %.1f ms  (included in the overhead)\n"
      "  of which   encoding p50 %.2f / p99 %.2f ms, server hand-offs p50 %.2f / p99 %.2f ms, "
      "transport p50 %.2f / p99 %.2f ms\n",
      r.sent, r.ok, r.sent - r.ok, r.wall_s, r.throughput_rps,
      r.images_per_s, ms(Quantile(r.latency_s, 0.5)), ms(Quantile(r.latency_s, 0.9)),
      ms(Quantile(r.latency_s, 0.99)), ms(Quantile(r.gang_s, 0.5)), ms(Quantile(r.gang_s, 0.99)),
      ms(Quantile(r.overhead_s, 0.5)), ms(Quantile(r.overhead_s, 0.9)),
      ms(Quantile(r.overhead_s, 0.99)), ms(Quantile(r.queued_s, 0.5)),
      ms(Quantile(r.queued_s, 0.99)), ms(Quantile(r.encoding_s, 0.5)), ms(Quantile(r.encoding_s, 0.99)),
      ms(Quantile(r.dispatch_s, 0.5)), ms(Quantile(r.dispatch_s, 0.99)), ms(Quantile(r.transport_s, 0.5)),
      ms(Quantile(r.transport_s, 0.99))));
  for (const auto& [code, n] : r.errors) absl::StrAppend(&out, "errors       ", code, ": ", n, "\n");
  return out;
}

std::string FormatBenchJson(const BenchOptions& options, const BenchResult& r) {
  std::string errors;
  for (const auto& [code, n] : r.errors) {
    absl::StrAppend(&errors, errors.empty() ? "" : ", ", "\"", code, "\": ", n);
  }
  return absl::StrFormat(
      "{\"concurrency\": %d, \"rate\": %.4f, \"offered_rps\": %.4f, \"sent\": %d, \"ok\": %d, \"errors\": {%s}, \"wall_s\": %.4f, "
      "\"throughput_rps\": %.4f, \"images_per_s\": %.4f, "
      "\"latency_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
      "\"gang_ms\": {\"p50\": %.3f, \"p99\": %.3f}, "
      "\"overhead_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
      "\"queued_ms\": {\"p50\": %.3f, \"p99\": %.3f}, "
      "\"encoding_ms\": {\"p50\": %.3f, \"p99\": %.3f}, "
      "\"dispatch_ms\": {\"p50\": %.3f, \"p99\": %.3f}, "
      "\"transport_ms\": {\"p50\": %.3f, \"p99\": %.3f}}\n",
      options.concurrency, options.rate, r.offered_rps, r.sent, r.ok, errors, r.wall_s, r.throughput_rps, r.images_per_s,
      Quantile(r.latency_s, 0.5) * 1e3, Quantile(r.latency_s, 0.9) * 1e3,
      Quantile(r.latency_s, 0.99) * 1e3, Quantile(r.gang_s, 0.5) * 1e3,
      Quantile(r.gang_s, 0.99) * 1e3, Quantile(r.overhead_s, 0.5) * 1e3,
      Quantile(r.overhead_s, 0.9) * 1e3, Quantile(r.overhead_s, 0.99) * 1e3,
      Quantile(r.queued_s, 0.5) * 1e3, Quantile(r.queued_s, 0.99) * 1e3, Quantile(r.encoding_s, 0.5) * 1e3,
      Quantile(r.encoding_s, 0.99) * 1e3, Quantile(r.dispatch_s, 0.5) * 1e3, Quantile(r.dispatch_s, 0.99) * 1e3,
      Quantile(r.transport_s, 0.5) * 1e3, Quantile(r.transport_s, 0.99) * 1e3);
}

}  // namespace ditserve::client
