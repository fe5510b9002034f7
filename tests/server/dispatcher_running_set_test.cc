// The dispatcher's side of step-level continuous batching, with a fake
// gang: what it sends while a running set runs (joins of compatible
// requests, up to --max_running_requests; nothing under --join_policy
// batch; nothing past an incompatible request that waited
// --max_join_wait_s), and how it answers Left, Progress and a drained set.

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "server/dispatcher.h"

namespace ditserve::server {
namespace {

// Records what the dispatcher sends to the gang.
class FakeGang final : public GangChannel {
 public:
  bool Send(uint64_t, const control::v1::FrontendMessage& m) override {
    absl::MutexLock lock(&mu_);
    if (m.has_run()) runs_.push_back(m.run());
    if (m.has_cancel()) {
      for (uint64_t id : m.cancel().request_ids()) cancels_.push_back(id);
    }
    return true;
  }
  // The request ids of each RunBatch sent so far, waiting up to 5 s for
  // `count` of them.
  std::vector<std::vector<uint64_t>> Runs(size_t count = 0) {
    absl::MutexLock lock(&mu_);
    const auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return runs_.size() >= count; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(5));
    std::vector<std::vector<uint64_t>> out;
    for (const auto& r : runs_) {
      std::vector<uint64_t> ids;
      for (const auto& item : r.items()) ids.push_back(item.request_id());
      out.push_back(ids);
    }
    return out;
  }
  std::vector<uint64_t> cancels() {
    absl::MutexLock lock(&mu_);
    return cancels_;
  }
  // Each RunBatch's max_running_images.
  std::vector<int> Limits() {
    absl::MutexLock lock(&mu_);
    std::vector<int> out;
    for (const auto& r : runs_) out.push_back(r.max_running_images());
    return out;
  }

 private:
  absl::Mutex mu_;
  std::vector<control::v1::RunBatch> runs_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> cancels_ ABSL_GUARDED_BY(mu_);
};

class Sink final : public ResponseSink {
 public:
  void Progress(const v1::Progress& p) override {
    absl::MutexLock lock(&mu_);
    steps_.push_back(p.step());
  }
  void Finish(const grpc::Status& status, v1::GenerateResponse response) override {
    absl::MutexLock lock(&mu_);
    code_ = status.error_code();
    message_ = status.error_message();
    response_ = std::move(response);
    finished_ = true;
  }
  // The final code, waiting up to 5 s; UNKNOWN when not finished.
  grpc::StatusCode Wait() {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&finished_), absl::Seconds(5));
    return finished_ ? code_ : grpc::StatusCode::UNKNOWN;
  }
  bool finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  std::vector<int> steps() {
    absl::MutexLock lock(&mu_);
    return steps_;
  }
  v1::GenerateResponse response() {
    absl::MutexLock lock(&mu_);
    return response_;
  }

 private:
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::StatusCode code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::UNKNOWN;
  std::string message_ ABSL_GUARDED_BY(mu_);
  v1::GenerateResponse response_ ABSL_GUARDED_BY(mu_);
  std::vector<int> steps_ ABSL_GUARDED_BY(mu_);
};

control::v1::Hello Hello(bool accepts_joins) {
  control::v1::Hello h;
  h.set_size_multiple(16);
  h.set_default_size(64);
  h.set_model_family("flux");
  h.mutable_parallel()->set_data_parallel_degree(1);
  h.mutable_parallel()->set_pipefusion_parallel_degree(1);
  h.mutable_parallel()->set_ulysses_degree(1);
  h.mutable_parallel()->set_ring_degree(1);
  h.set_accepts_joins(accepts_joins);
  return h;
}

v1::GenerateRequest Request(int steps, int size = 64, int images = 1) {
  v1::GenerateRequest r;
  r.set_prompt("a red circle");
  r.set_num_inference_steps(steps);
  r.set_height(size);
  r.set_width(size);
  r.set_num_images(images);
  return r;
}

// The gang's Left for request `id`: `images` black 64 × 64 images.
control::v1::Left Done(uint64_t id, int images = 1, int max_running = 1) {
  control::v1::Left left;
  left.set_request_id(id);
  left.set_max_running(max_running);
  for (int i = 0; i < images; ++i) {
    control::v1::ItemImage& image = *left.add_images();
    image.set_request_id(id);
    image.set_width(64);
    image.set_height(64);
    image.set_rgb(std::string(64 * 64 * 3, '\0'));
  }
  return left;
}

struct FakeServer {
  explicit FakeServer(DispatcherOptions o, bool accepts_joins = true)
      : metrics(*Metrics::Create("", "m", "p")), dispatcher(o, *metrics, [](bool) {}) {
    dispatcher.SetChannel(&gang);
    dispatcher.OnAttach(1, Hello(accepts_joins));
  }
  uint64_t Submit(const v1::GenerateRequest& r, std::shared_ptr<Sink> sink) {
    auto id = dispatcher.Submit(r, absl::InfiniteFuture(), sink);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : 0;
  }
  FakeGang gang;
  std::unique_ptr<Metrics> metrics;
  Dispatcher dispatcher;
};

TEST(DispatcherRunningSet, CompatibleRequestsJoinTheRunningSetAndOthersWait) {
  FakeServer s(DispatcherOptions{});
  auto a = std::make_shared<Sink>(), b = std::make_shared<Sink>(), c = std::make_shared<Sink>();
  const uint64_t ia = s.Submit(Request(30), a);
  ASSERT_EQ(s.gang.Runs(1).size(), 1u);
  // Another step count joins at once; another size waits for the set.
  const uint64_t ic = s.Submit(Request(4, 128), c);
  const uint64_t ib = s.Submit(Request(4), b);
  auto runs = s.gang.Runs(2);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], std::vector<uint64_t>{ia});
  EXPECT_EQ(runs[1], std::vector<uint64_t>{ib});
  // One Progress per set step, per member.
  control::v1::Progress p;
  p.set_running(2);
  for (auto [id, step, total] : {std::tuple{ia, 2, 30}, std::tuple{ib, 1, 4}}) {
    control::v1::MemberStep& m = *p.add_members();
    m.set_request_id(id);
    m.set_step(step);
    m.set_total(total);
  }
  s.dispatcher.OnProgress(1, p);
  EXPECT_EQ(b->steps(), std::vector<int>{1});
  EXPECT_EQ(a->steps(), std::vector<int>{2});
  s.dispatcher.OnLeft(1, Done(ib, 1, 2));
  EXPECT_EQ(b->Wait(), grpc::StatusCode::OK);
  EXPECT_EQ(b->response().timings().batch_size(), 2);
  EXPECT_EQ(s.gang.Runs().size(), 2u);  // C still waits: A runs
  s.dispatcher.OnLeft(1, Done(ia));
  EXPECT_EQ(a->Wait(), grpc::StatusCode::OK);
  runs = s.gang.Runs(3);
  ASSERT_EQ(runs.size(), 3u);  // the set emptied: C starts the next
  EXPECT_EQ(runs[2], std::vector<uint64_t>{ic});
  // The gang refuses it: its Left's code reaches the client.
  control::v1::Left refused;
  refused.set_request_id(ic);
  refused.set_code(static_cast<int>(absl::StatusCode::kInvalidArgument));
  refused.set_message("no");
  s.dispatcher.OnLeft(1, refused);
  EXPECT_EQ(c->Wait(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(DispatcherRunningSet, TheSetHoldsAtMostMaxRunningImages) {
  DispatcherOptions o;
  o.max_running_images = 3;
  FakeServer s(o);
  auto a = std::make_shared<Sink>(), b = std::make_shared<Sink>(), c = std::make_shared<Sink>();
  const uint64_t ia = s.Submit(Request(30, 64, 2), a);
  ASSERT_EQ(s.gang.Runs(1).size(), 1u);
  const uint64_t ib = s.Submit(Request(30, 64, 2), b);  // 2 + 2 > 3: waits
  const uint64_t ic = s.Submit(Request(30, 64, 1), c);  // 2 + 1 fits: joins
  auto runs = s.gang.Runs(2);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], (std::vector<uint64_t>{ia, ia}));
  EXPECT_EQ(runs[1], std::vector<uint64_t>{ic});
  s.dispatcher.OnLeft(1, Done(ia, 2));
  runs = s.gang.Runs(3);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[2], (std::vector<uint64_t>{ib, ib}));
  EXPECT_EQ(a->Wait(), grpc::StatusCode::OK);
  EXPECT_EQ(a->response().images_size(), 2);
}

// With a lookahead the frontend sends images beyond the set's room; each
// RunBatch carries the room itself, which the gang enforces (it holds the
// rest until members leave).
TEST(DispatcherRunningSet, TheLookaheadSendsJoinsBeyondTheRoomAndEachRunSaysTheRoom) {
  DispatcherOptions o;
  o.max_running_images = 2;
  o.join_lookahead_images = 1;
  FakeServer s(o);
  std::vector<std::shared_ptr<Sink>> sinks;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    sinks.push_back(std::make_shared<Sink>());
    ids.push_back(s.Submit(Request(30), sinks.back()));
    s.gang.Runs(std::min(i + 1, 3));
  }
  auto runs = s.gang.Runs(3);
  ASSERT_EQ(runs.size(), 3u);  // 2 running + 1 ahead; the fourth waits
  for (int i = 0; i < 3; ++i) EXPECT_EQ(runs[i], std::vector<uint64_t>{ids[i]});
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(s.gang.Runs().size(), 3u);
  EXPECT_EQ(s.gang.Limits(), (std::vector<int>{2, 2, 2}));
  s.dispatcher.OnLeft(1, Done(ids[0]));
  runs = s.gang.Runs(4);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[3], std::vector<uint64_t>{ids[3]});
  EXPECT_EQ(sinks[0]->Wait(), grpc::StatusCode::OK);
  // Closed batches carry no limit.
  DispatcherOptions closed;
  closed.join_policy = "batch";
  FakeServer b(closed);
  b.Submit(Request(30), std::make_shared<Sink>());
  ASSERT_EQ(b.gang.Runs(1).size(), 1u);
  EXPECT_EQ(b.gang.Limits(), std::vector<int>{0});
}

TEST(DispatcherRunningSet, BatchPolicyAndClosedGangsSendOneBatchAtATime) {
  for (bool accepts_joins : {true, false}) {
    DispatcherOptions o;
    if (accepts_joins) o.join_policy = "batch";
    FakeServer s(o, accepts_joins);
    auto a = std::make_shared<Sink>(), b = std::make_shared<Sink>();
    s.Submit(Request(30), a);
    ASSERT_EQ(s.gang.Runs(1).size(), 1u);
    s.Submit(Request(30), b);
    absl::SleepFor(absl::Milliseconds(200));
    EXPECT_EQ(s.gang.Runs().size(), 1u) << accepts_joins;
  }
}

TEST(DispatcherRunningSet, AnIncompatibleRequestThatWaitedStopsTheJoins) {
  DispatcherOptions o;
  o.max_join_wait = absl::ZeroDuration();
  FakeServer s(o);
  auto a = std::make_shared<Sink>(), b = std::make_shared<Sink>(), c = std::make_shared<Sink>();
  const uint64_t ia = s.Submit(Request(30), a);
  ASSERT_EQ(s.gang.Runs(1).size(), 1u);
  const uint64_t ic = s.Submit(Request(30, 128), c);  // at the head, incompatible, waited 0 s ≥ 0
  s.Submit(Request(30), b);                            // compatible, but behind it
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(s.gang.Runs().size(), 1u);
  s.dispatcher.OnLeft(1, Done(ia));
  auto runs = s.gang.Runs(2);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[1], std::vector<uint64_t>{ic});  // the waiting one starts the next set
}

TEST(DispatcherRunningSet, ALateJoinSurvivesTheDrainAndABrokenGangFailsIt) {
  FakeServer s(DispatcherOptions{});
  auto a = std::make_shared<Sink>(), b = std::make_shared<Sink>(), c = std::make_shared<Sink>();
  const uint64_t ia = s.Submit(Request(30), a);
  ASSERT_EQ(s.gang.Runs(1).size(), 1u);
  const uint64_t ib = s.Submit(Request(30), b);  // joins
  ASSERT_EQ(s.gang.Runs(2).size(), 2u);
  // A leaves and the gang's set drains before it saw B's join: B starts
  // the gang's next set and is still running.
  s.dispatcher.OnLeft(1, Done(ia));
  control::v1::BatchDone drained;
  drained.set_set_drained(true);
  s.dispatcher.OnBatchDone(1, drained);
  EXPECT_FALSE(b->finished());
  s.dispatcher.OnLeft(1, Done(ib));
  EXPECT_EQ(b->Wait(), grpc::StatusCode::OK);
  // A set that ends with the gang broken fails its members.
  const uint64_t ic = s.Submit(Request(30), c);
  ASSERT_EQ(s.gang.Runs(3).size(), 3u);
  (void)ic;
  control::v1::BatchDone broken;
  broken.set_set_drained(true);
  broken.set_code(static_cast<int>(absl::StatusCode::kUnavailable));
  broken.set_message("a peer died");
  s.dispatcher.OnBatchDone(1, broken);
  EXPECT_EQ(c->Wait(), grpc::StatusCode::UNAVAILABLE);
}

TEST(DispatcherRunningSet, AnAbandonedMemberIsCancelledOnTheGangAndItsLeftIgnored) {
  FakeServer s(DispatcherOptions{});
  auto a = std::make_shared<Sink>(), b = std::make_shared<Sink>();
  const uint64_t ia = s.Submit(Request(30), a);
  ASSERT_EQ(s.gang.Runs(1).size(), 1u);
  const uint64_t ib = s.Submit(Request(30), b);  // joins
  ASSERT_EQ(s.gang.Runs(2).size(), 2u);
  s.dispatcher.Abandon(ia, absl::DeadlineExceededError("deadline"));
  EXPECT_EQ(a->Wait(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(s.gang.cancels(), std::vector<uint64_t>{ia});
  control::v1::Left stopped;
  stopped.set_request_id(ia);
  stopped.set_code(static_cast<int>(absl::StatusCode::kCancelled));
  s.dispatcher.OnLeft(1, stopped);
  s.dispatcher.OnLeft(1, Done(ib));
  EXPECT_EQ(b->Wait(), grpc::StatusCode::OK);
}

// ShareRunningSet: size and max_sequence_length must match, no step cache;
// steps, seeds, guidance and CFG use may differ.
TEST(DispatcherRunningSet, WhoSharesASet) {
  GenerationParams a;
  a.height = a.width = 64;
  a.num_inference_steps = 4;
  a.max_sequence_length = 512;
  GenerationParams b = a;
  b.num_inference_steps = 28;
  b.seed = 9;
  b.guidance_scale = 7;
  EXPECT_TRUE(ShareRunningSet(a, b));
  EXPECT_FALSE(Compatible(a, b));
  GenerationParams c = a;
  c.width = 128;
  EXPECT_FALSE(ShareRunningSet(a, c));
  c = a;
  c.cfg = true;
  c.true_cfg_scale = 4;
  EXPECT_TRUE(ShareRunningSet(a, c));
  EXPECT_FALSE(Compatible(a, c));
  c = a;
  c.max_sequence_length = 256;
  EXPECT_FALSE(ShareRunningSet(a, c));
  c = a;
  c.cache.method = core::StepCacheMethod::kFirstBlock;
  EXPECT_FALSE(ShareRunningSet(a, c));
  EXPECT_FALSE(ShareRunningSet(c, c));
}

}  // namespace
}  // namespace ditserve::server
