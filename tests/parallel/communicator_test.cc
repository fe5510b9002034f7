// Multi-process tests of the CPU communicators (shared memory on one
// machine, Gloo over TCP) on every dimension's group.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "parallel/gloo_communicator.h"
#include "parallel/process_groups.h"
#include "parallel/rendezvous.h"
#include "tests/harness/multiproc.h"
#include "tests/parallel/collective_checks.h"
#include "tests/parallel/test_gang.h"
#include "util/status_macros.h"

namespace ditserve::parallel {
namespace {

using testing::LaunchOptions;
using testing::LaunchScenario;
using testing::RankContext;

// "u,r,pp,cfg,dp" -> ParallelConfig.
ParallelConfig ParseConfig(const std::string& text) {
  std::vector<std::string> f = absl::StrSplit(text, ',');
  ParallelConfig c;
  int v[5] = {1, 1, 1, 1, 1};
  for (size_t i = 0; i < f.size() && i < 5; ++i) (void)absl::SimpleAtoi(f[i], &v[i]);
  c.ulysses_degree = v[0];
  c.ring_degree = v[1];
  c.pipefusion_parallel_degree = v[2];
  c.use_cfg_parallel = v[3] == 2;
  c.data_parallel_degree = v[4];
  return c;
}

absl::StatusOr<std::unique_ptr<ProcessGroups>> Join(const RankContext& ctx,
                                                    const ParallelConfig& config,
                                                    absl::Duration timeout,
                                                    bool shared_memory = true) {
  ProcessGroupsOptions options;
  options.timeout = timeout;
  options.shared_memory = shared_memory;
  return JoinTestGang(ctx, config, options);
}

DITSERVE_SCENARIO(collectives) {
  const ParallelConfig config = ParseConfig(ctx.args.at(0));
  const bool shared_memory = ctx.args.at(1) == "shm";
  auto groups = Join(ctx, config, absl::Seconds(120), shared_memory);
  DITSERVE_RETURN_IF_ERROR(groups.status());
  const WorldConfig& world = (*groups)->world();
  // Every group of several ranks uses the transport asked for (all ranks
  // are on this machine); the control group is always Gloo.
  for (Dim dim : kAllDims) {
    Communicator& comm = (*groups)->group(dim);
    const std::string want = shared_memory && comm.size() > 1 ? "shm" : "gloo";
    DITSERVE_RETURN_IF_ERROR(Check(comm.backend() == want,
                                   absl::StrCat(comm.name(), " uses ", comm.backend(), ", want ", want)));
  }
  DITSERVE_RETURN_IF_ERROR(Check((*groups)->control().backend() == std::string("gloo"), "control group"));
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (Dim dim : kAllDims) {
      DITSERVE_RETURN_IF_ERROR(CheckGroupCollectives((*groups)->group(dim), world.members(dim), ctx.rank, dtype,
                                            c10::Device(c10::kCPU)));
    }
    DITSERVE_RETURN_IF_ERROR(CheckGroupCollectives((*groups)->control(), world.members(Dim::kWorld),
                                          ctx.rank, dtype, c10::Device(c10::kCPU)));
  }
  // Integer and bool payloads move bit-exactly.
  at::Tensor flags = at::full({1}, ctx.rank % 2 == 0, at::kBool);
  auto all = (*groups)->group(Dim::kWorld).AllGather(flags, 0);
  DITSERVE_RETURN_IF_ERROR(all.status());
  for (int r = 0; r < ctx.world_size; ++r) {
    DITSERVE_RETURN_IF_ERROR(Check((*all)[r].item<bool>() == (r % 2 == 0), "bool all_gather"));
  }
  return absl::OkStatus();
}

class Collectives : public ::testing::TestWithParam<std::pair<int, std::string>> {};

// The "collectives" scenario on `world` ranks of `config` through `transport`.
void ExpectCollectivesPass(int world, const std::string& config, const std::string& transport) {
  LaunchOptions options;
  options.world_size = world;
  options.args = {config, transport};
  testing::ExpectAllRanksOk(LaunchScenario("collectives", options));
}

TEST_P(Collectives, EveryOpOnEveryGroupThroughSharedMemory) {
  ExpectCollectivesPass(GetParam().first, GetParam().second, "shm");
}

TEST_P(Collectives, EveryOpOnEveryGroupThroughGloo) {
  ExpectCollectivesPass(GetParam().first, GetParam().second, "gloo");
}

// "u,r,pp,cfg,dp"
INSTANTIATE_TEST_SUITE_P(
    Configs, Collectives,
    ::testing::Values(std::make_pair(2, "2,1,1,1,1"), std::make_pair(2, "1,2,1,1,1"),
                      std::make_pair(2, "1,1,2,1,1"), std::make_pair(2, "1,1,1,2,1"),
                      std::make_pair(2, "1,1,1,1,2"), std::make_pair(4, "2,2,1,1,1"),
                      std::make_pair(4, "4,1,1,1,1"), std::make_pair(4, "1,1,2,2,1"),
                      std::make_pair(4, "2,1,1,1,2"), std::make_pair(8, "2,2,2,1,1"),
                      std::make_pair(8, "1,2,1,2,2"), std::make_pair(8, "2,1,2,2,1")),
    [](const auto& info) {
      std::string name = absl::StrCat("W", info.param.first, "_", info.param.second);
      for (char& c : name) c = c == ',' ? '_' : c;
      return name;
    });

// Shapes that differ across ranks fail on every rank with INVALID_ARGUMENT,
// and so do a scatter dimension that does not divide and a bool all_reduce.
DITSERVE_SCENARIO(mismatched_shapes) {
  auto groups = Join(ctx, ParseConfig("2"), absl::Seconds(60), ctx.args.at(0) == "shm");
  DITSERVE_RETURN_IF_ERROR(groups.status());
  Communicator& comm = (*groups)->group(Dim::kUlysses);
  at::Tensor mine = at::ones({2, ctx.rank + 3});
  for (int op = 0; op < 4; ++op) {
    absl::Status s;
    if (op == 0) s = comm.AllGather(mine, 0).status();
    if (op == 1) s = comm.AllToAll(mine, 0, 1).status();
    if (op == 2) s = comm.Broadcast(mine, 0);
    if (op == 3) s = comm.AllReduce(mine, ReduceOp::kSum);
    DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kInvalidArgument,
                          absl::StrCat("op ", op, ": want INVALID_ARGUMENT, got ", s.ToString())));
    DITSERVE_RETURN_IF_ERROR(Check(s.message().find("shapes differ across ranks") != std::string::npos,
                          std::string(s.message())));
  }
  at::Tensor odd = at::ones({3, 4});
  absl::Status s = comm.AllToAll(odd, 0, 1).status();
  DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kInvalidArgument &&
                            s.message().find("does not divide by the group size 2") != std::string::npos,
                        s.ToString()));
  s = comm.AllGather(odd, 2).status();
  DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kInvalidArgument, s.ToString()));
  at::Tensor flags = at::ones({4}, at::kBool);
  s = comm.AllReduce(flags, ReduceOp::kSum);
  DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kInvalidArgument &&
                                     s.message() == "all_reduce of bool tensors is not supported",
                                 s.ToString()));
  // The group still works after these rejected calls.
  at::Tensor t = at::ones({4});
  DITSERVE_RETURN_IF_ERROR(comm.AllReduce(t, ReduceOp::kSum));
  return Check(t[0].item<float>() == 2.0f, "all_reduce after rejected calls");
}

// Each failure test runs on both CPU transports.
class Transport : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(CpuTransports, Transport, ::testing::Values("shm", "gloo"),
                         [](const auto& info) { return info.param; });

TEST_P(Transport, MismatchedShapesAreInvalidArgumentOnEveryRank) {
  LaunchOptions options;
  options.world_size = 2;
  options.args = {GetParam()};
  testing::ExpectAllRanksOk(LaunchScenario("mismatched_shapes", options));
}

constexpr double kPeerTimeoutS = 4;

// Rank 2 dies (SIGKILL) after the groups are built; ranks 0 and 1 must see
// an error from their next collectives within the timeout, never hang.
DITSERVE_SCENARIO(dead_peer) {
  auto groups = Join(ctx, ParseConfig("1,1,1,1,3"), absl::Seconds(kPeerTimeoutS), ctx.args.at(0) == "shm");
  DITSERVE_RETURN_IF_ERROR(groups.status());
  DITSERVE_RETURN_IF_ERROR((*groups)->group(Dim::kWorld).Barrier());
  if (ctx.rank == 2) raise(SIGKILL);
  sleep(1);  // let the kill land
  const auto start = std::chrono::steady_clock::now();
  absl::Status s;
  for (int i = 0; i < 3 && s.ok(); ++i) {
    at::Tensor t = at::ones({1024});
    s = (*groups)->group(Dim::kWorld).AllReduce(t, ReduceOp::kSum);
  }
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("rank %d: error after %.2f s: %s\n", ctx.rank, elapsed, s.ToString().c_str());
  DITSERVE_RETURN_IF_ERROR(Check(!s.ok(), "all_reduce with a dead peer succeeded"));
  DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kUnavailable ||
                            s.code() == absl::StatusCode::kDeadlineExceeded,
                        s.ToString()));
  // Within the timeout, plus slack for a loaded machine.
  DITSERVE_RETURN_IF_ERROR(Check(elapsed < kPeerTimeoutS + 20, absl::StrCat("took ", elapsed, " s")));
  // Later calls fail fast; Abort is idempotent.
  at::Tensor t = at::ones({4});
  DITSERVE_RETURN_IF_ERROR(Check(!(*groups)->group(Dim::kWorld).AllReduce(t, ReduceOp::kSum).ok(),
                        "call after failure succeeded"));
  (*groups)->AbortAll();
  (*groups)->AbortAll();
  s = (*groups)->group(Dim::kWorld).Barrier();
  return Check(s.code() == absl::StatusCode::kFailedPrecondition, s.ToString());
}

TEST_P(Transport, DeadPeerGivesAnErrorWithinTheTimeout) {
  LaunchOptions options;
  options.world_size = 3;
  options.args = {GetParam()};
  auto outcomes = LaunchScenario("dead_peer", options);
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  for (int r : {0, 1}) {
    EXPECT_TRUE((*outcomes)[r].ok()) << "rank " << r << ":\n" << (*outcomes)[r].log;
  }
  EXPECT_FALSE((*outcomes)[2].exited);
  EXPECT_EQ((*outcomes)[2].term_signal, SIGKILL);
  EXPECT_FALSE((*outcomes)[2].timed_out);
}

// Rank 2 stays alive but never joins the collective: the others get
// DEADLINE_EXCEEDED after the timeout, then release it through the store.
DITSERVE_SCENARIO(hung_peer) {
  auto groups = Join(ctx, ParseConfig("1,1,1,1,3"), absl::Seconds(kPeerTimeoutS), ctx.args.at(0) == "shm");
  DITSERVE_RETURN_IF_ERROR(groups.status());
  auto store = (*groups)->store();
  if (ctx.rank == 2) {
    store->wait({"released"}, std::chrono::seconds(120));
    return absl::OkStatus();
  }
  const auto start = std::chrono::steady_clock::now();
  at::Tensor t = at::ones({16});
  absl::Status s = (*groups)->group(Dim::kWorld).AllReduce(t, ReduceOp::kSum);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("rank %d: error after %.2f s: %s\n", ctx.rank, elapsed, s.ToString().c_str());
  store->add("timed_out", 1);
  if (store->add("timed_out", 0) == 2) store->set("released", std::vector<uint8_t>{1});
  DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kDeadlineExceeded, s.ToString()));
  DITSERVE_RETURN_IF_ERROR(Check(elapsed >= kPeerTimeoutS * 0.9, absl::StrCat("too early: ", elapsed)));
  return Check(elapsed < kPeerTimeoutS + 20, absl::StrCat("took ", elapsed, " s"));
}

TEST_P(Transport, HungPeerGivesDeadlineExceeded) {
  LaunchOptions options;
  options.world_size = 3;
  options.args = {GetParam()};
  testing::ExpectAllRanksOk(LaunchScenario("hung_peer", options));
}

// The harness itself: a failing rank is reported with its log, a hanging
// launch is killed at the deadline.
DITSERVE_SCENARIO(rank1_fails) {
  if (ctx.rank == 1) return absl::InternalError("planted failure");
  return absl::OkStatus();
}
DITSERVE_SCENARIO(hangs) {
  sleep(600);
  return absl::OkStatus();
}

TEST(Harness, ReportsFailingRankAndKillsHungLaunch) {
  auto failed = LaunchScenario("rank1_fails", LaunchOptions{.world_size = 2});
  ASSERT_TRUE(failed.ok());
  EXPECT_TRUE((*failed)[0].ok());
  EXPECT_FALSE((*failed)[1].ok());
  EXPECT_EQ((*failed)[1].exit_code, 1);
  EXPECT_NE((*failed)[1].log.find("planted failure"), std::string::npos) << (*failed)[1].log;

  const auto start = std::chrono::steady_clock::now();
  auto hung = LaunchScenario("hangs", LaunchOptions{.world_size = 2, .timeout = absl::Seconds(2)});
  ASSERT_TRUE(hung.ok());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 60);
  for (const auto& o : *hung) {
    EXPECT_TRUE(o.timed_out);
    EXPECT_FALSE(o.ok());
  }
}

}  // namespace
}  // namespace ditserve::parallel
