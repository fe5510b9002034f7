// The dispatcher's per-caller limits, with a gang attached that never
// takes a batch (no channel): requests stay queued, so the counts are
// exact.

#include <gtest/gtest.h>

#include <memory>

#include "server/dispatcher.h"

namespace ditserve::server {
namespace {

class NullSink final : public ResponseSink {
 public:
  void Progress(const v1::Progress&) override {}
  void Finish(const grpc::Status& status, v1::GenerateResponse) override { finished_code = status.error_code(); }
  grpc::StatusCode finished_code = grpc::StatusCode::UNKNOWN;
};

control::v1::Hello TinyHello() {
  control::v1::Hello h;
  h.set_size_multiple(16);
  h.set_default_size(64);
  h.set_model_family("flux");
  h.mutable_parallel()->set_data_parallel_degree(1);
  h.mutable_parallel()->set_pipefusion_parallel_degree(1);
  h.mutable_parallel()->set_ulysses_degree(1);
  h.mutable_parallel()->set_ring_degree(1);
  return h;
}

v1::GenerateRequest Request() {
  v1::GenerateRequest r;
  r.set_prompt("a red circle");
  r.set_num_inference_steps(2);
  return r;
}

TEST(DispatcherCallerLimits, QueuedAndInFlightLimitsPerNamedCaller) {
  auto metrics = Metrics::Create("", "m", "p");
  ASSERT_TRUE(metrics.ok());
  DispatcherOptions o;
  o.max_queue_size = 16;
  o.max_queued_per_caller = 2;
  o.max_requests_per_caller = 3;
  Dispatcher d(o, **metrics, [](bool) {});
  d.OnAttach(1, TinyHello());
  const absl::Time never = absl::InfiniteFuture();
  auto a1 = d.Submit(Request(), never, std::make_shared<NullSink>(), "alice");
  auto a2 = d.Submit(Request(), never, std::make_shared<NullSink>(), "alice");
  ASSERT_TRUE(a1.ok() && a2.ok()) << a1.status() << a2.status();
  const auto a3 = d.Submit(Request(), never, std::make_shared<NullSink>(), "alice");
  EXPECT_EQ(a3.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(a3.status().message(),
            "caller 'alice' has 2 requests waiting, its limit (--max_queued_per_caller); retry when one starts");
  // Another caller, and unnamed callers (no tokens), are not held back.
  EXPECT_TRUE(d.Submit(Request(), never, std::make_shared<NullSink>(), "bob").ok());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(d.Submit(Request(), never, std::make_shared<NullSink>()).ok());
  // One of alice's finishes (abandoned): she may queue again.
  d.Abandon(*a1, absl::CancelledError("client went away"));
  EXPECT_TRUE(d.Submit(Request(), never, std::make_shared<NullSink>(), "alice").ok());
  EXPECT_EQ(d.Outstanding(), 1 + 1 + 4 + 1);
}

TEST(DispatcherCallerLimits, InFlightLimitCountsEveryUnfinishedRequest) {
  auto metrics = Metrics::Create("", "m", "p");
  ASSERT_TRUE(metrics.ok());
  DispatcherOptions o;
  o.max_requests_per_caller = 2;  // no queue limit
  Dispatcher d(o, **metrics, [](bool) {});
  d.OnAttach(1, TinyHello());
  const absl::Time never = absl::InfiniteFuture();
  ASSERT_TRUE(d.Submit(Request(), never, std::make_shared<NullSink>(), "ci").ok());
  ASSERT_TRUE(d.Submit(Request(), never, std::make_shared<NullSink>(), "ci").ok());
  const auto third = d.Submit(Request(), never, std::make_shared<NullSink>(), "ci");
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(third.status().message(),
            "caller 'ci' has 2 requests in flight, its limit (--max_requests_per_caller); retry when one finishes");
}

}  // namespace
}  // namespace ditserve::server
