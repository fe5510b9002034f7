// Multi-process tests of what is particular to the shared-memory
// communicator: messages larger than a slot, receives posted late or out of
// order, peers that exit or abort, the fallback when a member cannot map the
// segment, and mismatched receives. The collectives themselves are checked
// on every group in communicator_test.cc.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "parallel/shm_communicator.h"
#include "parallel/shm_segment.h"
#include "tests/harness/multiproc.h"
#include "tests/parallel/collective_checks.h"
#include "tests/parallel/test_gang.h"
#include "util/status_macros.h"

namespace ditserve::parallel {
namespace {

using testing::LaunchOptions;
using testing::LaunchScenario;
using testing::RankContext;

// A world-sized shared-memory group; an error if it fell back. Rank 0
// hosts the store: keep it alive as long as any rank may use it.
struct ShmGroup {
  c10::intrusive_ptr<c10d::Store> store;
  std::unique_ptr<Communicator> comm;
  Communicator* operator->() { return comm.get(); }
  Communicator& operator*() { return *comm; }
};
absl::StatusOr<ShmGroup> Shm(const RankContext& ctx, size_t slot_bytes, absl::Duration timeout,
                             const std::string& name = "shm-test",
                             c10::intrusive_ptr<c10d::Store> existing = {},
                             std::shared_ptr<ShmProgressDomain> progress = nullptr) {
  auto store = existing ? absl::StatusOr<c10::intrusive_ptr<c10d::Store>>(existing) : JoinTestStore(ctx);
  if (!store.ok()) return store.status();
  ShmCommunicatorOptions options;
  options.name = name;
  options.slot_bytes = slot_bytes;
  options.timeout = timeout;
  options.progress = progress;
  std::string reason;
  auto comm = CreateShmCommunicator(*store, ctx.rank, ctx.world_size, options, &reason);
  if (!comm.ok()) return comm.status();
  if (!*comm) return absl::InternalError("fell back to Gloo: " + reason);
  // No rank leaves (and takes the store down) before every rank has joined.
  if ((*store)->add("joined/" + name, 1) == ctx.world_size) {
    (*store)->set("all-joined/" + name, std::vector<uint8_t>{1});
  }
  (*store)->wait({"all-joined/" + name}, std::chrono::seconds(60));
  return ShmGroup{*store, *std::move(comm)};
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(ShmSlotBytes, DefaultSplitsSixteenMebibytesOverTheChannels) {
  EXPECT_EQ(DefaultShmSlotBytes(2), size_t{4} << 20);             // 16 MiB / 2 > 4 MiB cap
  EXPECT_EQ(DefaultShmSlotBytes(4), size_t{1400832});              // 16 MiB / 12, page-rounded
  EXPECT_EQ(DefaultShmSlotBytes(8), size_t{303104});               // 16 MiB / 56, page-rounded
  EXPECT_EQ(DefaultShmSlotBytes(16), size_t{256} << 10);            // 16 MiB / 240 < 256 KiB floor
}

// With 4 KiB slots every check's messages span several pieces, including
// strided sends and receives.
DITSERVE_SCENARIO(shm_pieces) {
  auto comm = Shm(ctx, 4096, absl::Seconds(120));
  DITSERVE_RETURN_IF_ERROR(comm.status());
  DITSERVE_RETURN_IF_ERROR(Check((*comm)->backend() == std::string("shm"), "backend"));
  std::vector<int> members;
  for (int r = 0; r < ctx.world_size; ++r) members.push_back(r);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    DITSERVE_RETURN_IF_ERROR(
        CheckGroupCollectives(**comm, members, ctx.rank, dtype, c10::Device(c10::kCPU)));
  }
  // 1.4 MB all-to-all from a transposed (strided) input: ~350 pieces per pair.
  const int p = ctx.world_size;
  const auto make = [&](int rank) {
    return (at::arange(3 * p * 4000, at::kFloat).reshape({4000, 3 * p}) * 3 + rank).t();  // [3p, 4000]
  };
  auto got = (*comm)->AllToAll(make(ctx.rank), 0, 1);
  DITSERVE_RETURN_IF_ERROR(got.status());
  std::vector<at::Tensor> parts;
  for (int r = 0; r < p; ++r) parts.push_back(make(r).narrow(0, 3 * ctx.rank, 3));
  return Check(at::equal(*got, at::cat(parts, 1)), "large strided all_to_all");
}

// Names in /dev/shm that start with `prefix`.
int NamesStartingWith(const std::string& prefix) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    if (absl::StartsWith(entry.path().filename().string(), prefix)) ++n;
  }
  return n;
}

// A creator that dies before unlinking leaves its segment's name; its
// launcher removes exactly that creator's names.
TEST(ShmSegment, LeftoversOfADeadCreatorAreRemovedAndNoOthers) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto segment = ShmSegment::Create(4096);
    if (segment.ok()) (void)segment->release();  // leak it: no unlink, as a crash
    _exit(segment.ok() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const std::string prefix = absl::StrCat("ditserve-", child, "-");
  ASSERT_EQ(NamesStartingWith(prefix), 1);
  auto mine = ShmSegment::Create(4096);
  ASSERT_TRUE(mine.ok()) << mine.status();
  // A creator whose pid starts with the dead one's digits keeps its name.
  const std::string longer = absl::StrCat("/dev/shm/ditserve-", child, "0-0000000000000000");
  { std::ofstream(longer).put('x'); }
  EXPECT_EQ(ShmSegment::RemoveLeftovers(child), 1);
  EXPECT_EQ(NamesStartingWith(prefix), 0);
  EXPECT_TRUE(std::filesystem::exists(longer)) << "the name of pid " << child << "0 was removed";
  std::filesystem::remove(longer);
  EXPECT_TRUE(std::filesystem::exists("/dev/shm" + (*mine)->name())) << "another process's segment was removed";
  EXPECT_EQ(ShmSegment::RemoveLeftovers(child), 0);
  (*mine)->Unlink();
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + (*mine)->name()));
}

TEST(ShmCommunicator, MessagesLargerThanASlotStreamInPieces) {
  testing::ExpectAllRanksOk(LaunchScenario("shm_pieces", LaunchOptions{.world_size = 3}));
}

// Rank 0 sends tags 5 (large), 6, 5 before rank 1 posts anything; rank 1
// asks for 6 first, then both 5s (which match in sending order). Then both
// send 1 MB to each other before either receives: neither may block the
// other. A collective afterwards finds the streams in step.
DITSERVE_SCENARIO(shm_out_of_order) {
  auto comm = Shm(ctx, 4096, absl::Seconds(120));
  DITSERVE_RETURN_IF_ERROR(comm.status());
  Communicator& c = **comm;
  const at::Tensor first = at::arange(20000, at::kFloat).reshape({100, 200});
  const at::Tensor middle = at::full({7}, 42, at::kInt);
  const at::Tensor last = -first;
  if (ctx.rank == 0) {
    std::vector<std::unique_ptr<PendingTransfer>> sends;
    for (auto [t, tag] : {std::pair{first, 5}, std::pair{middle, 6}, std::pair{last, 5}}) {
      auto s = c.Send(t, 1, tag);
      DITSERVE_RETURN_IF_ERROR(s.status());
      sends.push_back(*std::move(s));
    }
    for (auto& s : sends) DITSERVE_RETURN_IF_ERROR(s->Wait());
  } else {
    usleep(300 * 1000);  // let the sends go first
    at::Tensor got_middle = at::zeros({7}, at::kInt);
    auto rm = c.Recv(got_middle, 0, 6);
    DITSERVE_RETURN_IF_ERROR(rm.status());
    DITSERVE_RETURN_IF_ERROR((*rm)->Wait());
    at::Tensor got_first = at::zeros({200, 100}).t();  // strided targets
    at::Tensor got_last = at::zeros({200, 100}).t();
    auto r1 = c.Recv(got_first, 0, 5);
    DITSERVE_RETURN_IF_ERROR(r1.status());
    auto r2 = c.Recv(got_last, 0, 5);
    DITSERVE_RETURN_IF_ERROR(r2.status());
    DITSERVE_RETURN_IF_ERROR((*r2)->Wait());
    DITSERVE_RETURN_IF_ERROR((*r1)->Wait());
    DITSERVE_RETURN_IF_ERROR(Check(at::equal(got_middle, middle), "tag 6"));
    DITSERVE_RETURN_IF_ERROR(Check(at::equal(got_first, first), "first tag 5"));
    DITSERVE_RETURN_IF_ERROR(Check(at::equal(got_last, last), "second tag 5"));
  }
  const int peer = 1 - ctx.rank;
  const at::Tensor mine = at::full({256 * 1024}, ctx.rank + 1, at::kFloat);
  auto send = c.Send(mine, peer, 9);
  DITSERVE_RETURN_IF_ERROR(send.status());
  DITSERVE_RETURN_IF_ERROR((*send)->Wait());  // completes only while draining the peer's
  at::Tensor theirs = at::zeros_like(mine);
  auto recv = c.Recv(theirs, peer, 9);
  DITSERVE_RETURN_IF_ERROR(recv.status());
  DITSERVE_RETURN_IF_ERROR((*recv)->Wait());
  DITSERVE_RETURN_IF_ERROR(Check(at::equal(theirs, at::full_like(mine, peer + 1)), "crossing sends"));
  at::Tensor sum = at::ones({3});
  DITSERVE_RETURN_IF_ERROR(c.AllReduce(sum, ReduceOp::kSum));
  return Check(sum[2].item<float>() == 2.0f, "all_reduce after the point-to-point traffic");
}

TEST(ShmCommunicator, LateAndOutOfOrderReceivesMatchByTagInSendingOrder) {
  testing::ExpectAllRanksOk(LaunchScenario("shm_out_of_order", LaunchOptions{.world_size = 2}));
}

// Rank 1 waits on group A for a message rank 0 sends only after its 1 MB
// send on group B has gone through, which needs rank 1 to drain B while it
// is blocked on A. Groups in one progress domain (as ProcessGroups makes
// them) do that in the waiting thread; groups in separate domains through
// each domain's helper thread.
DITSERVE_SCENARIO(shm_cross_group) {
  const bool shared = ctx.args.at(0) == "shared";
  auto store = JoinTestStore(ctx);
  DITSERVE_RETURN_IF_ERROR(store.status());
  const absl::Duration timeout = absl::Seconds(60);
  auto domain = shared ? NewShmProgressDomain() : nullptr;
  auto a = Shm(ctx, 4096, timeout, "a", *store, domain);
  DITSERVE_RETURN_IF_ERROR(a.status());
  auto b = Shm(ctx, 4096, timeout, "b", *store, domain);
  DITSERVE_RETURN_IF_ERROR(b.status());
  const at::Tensor big = at::arange(256 * 1024, at::kFloat);
  absl::Status status;
  if (ctx.rank == 0) {
    auto on_b = (*b)->Send(big, 1, 0);
    DITSERVE_RETURN_IF_ERROR(on_b.status());
    status = (*on_b)->Wait();
    if (status.ok()) {
      auto on_a = (*a)->Send(at::ones({4}), 1, 0);
      DITSERVE_RETURN_IF_ERROR(on_a.status());
      status = (*on_a)->Wait();
    }
  } else {
    at::Tensor got_big = at::zeros_like(big), got_small = at::zeros({4});
    auto from_b = (*b)->Recv(got_big, 0, 0);
    DITSERVE_RETURN_IF_ERROR(from_b.status());
    auto from_a = (*a)->Recv(got_small, 0, 0);
    DITSERVE_RETURN_IF_ERROR(from_a.status());
    status = (*from_a)->Wait();
    if (status.ok()) status = (*from_b)->Wait();
    if (status.ok() && !(at::equal(got_big, big) && at::equal(got_small, at::ones({4})))) {
      return absl::InternalError("wrong data");
    }
  }
  return status;
}

TEST(ShmCommunicator, GroupsBlockedOnEachOtherStillDrainEachOther) {
  LaunchOptions options{.world_size = 2};
  options.args = {"shared"};
  testing::ExpectAllRanksOk(LaunchScenario("shm_cross_group", options));
  options.args = {"separate"};
  testing::ExpectAllRanksOk(LaunchScenario("shm_cross_group", options));
}

// Rank 0 posts a receive of 1 MB (many slots' worth) and then blocks
// outside the communicator until rank 1's send has completed: the domain's
// helper thread must move the data meanwhile (the generation blocks so on
// its stop agreement, which runs over Gloo).
DITSERVE_SCENARIO(shm_receive_while_away) {
  auto store = JoinTestStore(ctx);
  DITSERVE_RETURN_IF_ERROR(store.status());
  auto comm = Shm(ctx, 4096, absl::Seconds(60), "away", *store);
  DITSERVE_RETURN_IF_ERROR(comm.status());
  const at::Tensor big = at::arange(256 * 1024, at::kFloat);
  if (ctx.rank == 1) {
    auto send = (*comm)->Send(big, 0, 4);
    DITSERVE_RETURN_IF_ERROR(send.status());
    DITSERVE_RETURN_IF_ERROR((*send)->Wait());
    (*store)->set("sent", std::vector<uint8_t>{1});
    return absl::OkStatus();
  }
  at::Tensor got = at::zeros({512, 512}).t();  // strided: staged, then copied
  auto recv = (*comm)->Recv(got, 1, 4);
  DITSERVE_RETURN_IF_ERROR(recv.status());
  (*store)->wait({"sent"}, std::chrono::seconds(60));
  DITSERVE_RETURN_IF_ERROR((*recv)->Wait());
  return Check(at::equal(got, big.reshape({512, 512})), "data");
}

TEST(ShmCommunicator, PostedReceivesProgressWhileTheRankIsAway) {
  testing::ExpectAllRanksOk(LaunchScenario("shm_receive_while_away", LaunchOptions{.world_size = 2}));
}

// A peer killed mid-run is noticed through its liveness lock in well under
// the (long) timeout.
DITSERVE_SCENARIO(shm_dead_peer) {
  auto comm = Shm(ctx, 0, absl::Seconds(120));
  DITSERVE_RETURN_IF_ERROR(comm.status());
  DITSERVE_RETURN_IF_ERROR((*comm)->Barrier());
  if (ctx.rank == 2) raise(SIGKILL);
  const auto start = std::chrono::steady_clock::now();
  at::Tensor t = at::ones({1024});
  absl::Status s = (*comm)->AllReduce(t, ReduceOp::kSum);
  const double elapsed = SecondsSince(start);
  std::printf("rank %d: after %.2f s: %s\n", ctx.rank, elapsed, s.ToString().c_str());
  DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kUnavailable, s.ToString()));
  DITSERVE_RETURN_IF_ERROR(Check(absl::StrContains(s.message(), "rank 2 exited"), s.ToString()));
  DITSERVE_RETURN_IF_ERROR(Check(elapsed < 60, absl::StrCat("took ", elapsed, " s")));
  s = (*comm)->Barrier();
  return Check(s.code() == absl::StatusCode::kFailedPrecondition, s.ToString());
}

TEST(ShmCommunicator, KilledPeerIsUnavailableLongBeforeTheTimeout) {
  auto outcomes = LaunchScenario("shm_dead_peer", LaunchOptions{.world_size = 3});
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  for (int r : {0, 1}) EXPECT_TRUE((*outcomes)[r].ok()) << "rank " << r << ":\n" << (*outcomes)[r].log;
  EXPECT_EQ((*outcomes)[2].term_signal, SIGKILL);
}

// A peer that aborts (alive) releases a rank waiting on it at once.
DITSERVE_SCENARIO(shm_abort) {
  auto store = JoinTestStore(ctx);
  DITSERVE_RETURN_IF_ERROR(store.status());
  auto comm = Shm(ctx, 0, absl::Seconds(120), "shm-test", *store);
  DITSERVE_RETURN_IF_ERROR(comm.status());
  DITSERVE_RETURN_IF_ERROR((*comm)->Barrier());
  if (ctx.rank == 1) {
    (*comm)->Abort();
    (*comm)->Abort();
    absl::Status s = (*comm)->Barrier();
    DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kFailedPrecondition, s.ToString()));
    (*store)->wait({"rank0-done"}, std::chrono::seconds(120));
    return absl::OkStatus();
  }
  const auto start = std::chrono::steady_clock::now();
  at::Tensor t = at::zeros({16});
  auto recv = (*comm)->Recv(t, 1, 3);
  DITSERVE_RETURN_IF_ERROR(recv.status());
  absl::Status s = (*recv)->Wait();
  const double elapsed = SecondsSince(start);
  (*store)->set("rank0-done", std::vector<uint8_t>{1});
  DITSERVE_RETURN_IF_ERROR(Check(s.code() == absl::StatusCode::kUnavailable &&
                                     absl::StrContains(s.message(), "rank 1 left the group"),
                                 s.ToString()));
  return Check(elapsed < 60, absl::StrCat("took ", elapsed, " s"));
}

TEST(ShmCommunicator, AbortingPeerReleasesWaitingRanks) {
  testing::ExpectAllRanksOk(LaunchScenario("shm_abort", LaunchOptions{.world_size = 2}));
}

// Members that disagree on the layout cannot share a segment: every member
// gets nullptr and the reason, and the store stays usable for a next group.
DITSERVE_SCENARIO(shm_fallback) {
  auto store = JoinTestStore(ctx);
  DITSERVE_RETURN_IF_ERROR(store.status());
  ShmCommunicatorOptions options;
  options.name = "mismatched";
  options.slot_bytes = ctx.rank == 0 ? 8192 : 16384;
  std::string reason;
  auto comm = CreateShmCommunicator(*store, ctx.rank, ctx.world_size, options, &reason);
  DITSERVE_RETURN_IF_ERROR(comm.status());
  DITSERVE_RETURN_IF_ERROR(Check(*comm == nullptr, "a mismatched group was created"));
  std::printf("rank %d: fallback reason: %s\n", ctx.rank, reason.c_str());
  DITSERVE_RETURN_IF_ERROR(Check(absl::StrContains(reason, "rank 1: "), reason));
  auto good = Shm(ctx, 8192, absl::Seconds(60), "matched", *store);
  DITSERVE_RETURN_IF_ERROR(good.status());
  return (*good)->Barrier();
}

TEST(ShmCommunicator, MembersThatCannotShareTheSegmentAllFallBack) {
  testing::ExpectAllRanksOk(LaunchScenario("shm_fallback", LaunchOptions{.world_size = 2}));
}

// Bad point-to-point calls are INVALID_ARGUMENT naming the problem.
DITSERVE_SCENARIO(shm_bad_calls) {
  auto comm = Shm(ctx, 0, absl::Seconds(60));
  DITSERVE_RETURN_IF_ERROR(comm.status());
  Communicator& c = **comm;
  at::Tensor t = at::ones({4});
  auto negative = c.Send(t, 1 - ctx.rank, -3);
  DITSERVE_RETURN_IF_ERROR(Check(negative.status().code() == absl::StatusCode::kInvalidArgument &&
                                     absl::StrContains(negative.status().message(), "tag -3"),
                                 negative.status().ToString()));
  auto self = c.Send(t, ctx.rank, 0);
  DITSERVE_RETURN_IF_ERROR(Check(self.status().code() == absl::StatusCode::kInvalidArgument,
                                 self.status().ToString()));
  auto outside = c.Recv(t, 2, 0);
  DITSERVE_RETURN_IF_ERROR(Check(outside.status().code() == absl::StatusCode::kInvalidArgument,
                                 outside.status().ToString()));
  // A receive whose tensor does not fit the message.
  if (ctx.rank == 0) {
    auto send = c.Send(at::ones({4}, at::kFloat), 1, 1);
    DITSERVE_RETURN_IF_ERROR(send.status());
    return (*send)->Wait();
  }
  at::Tensor wrong = at::zeros({4}, at::kHalf);
  auto recv = c.Recv(wrong, 0, 1);
  absl::Status s = recv.ok() ? (*recv)->Wait() : recv.status();
  return Check(s.code() == absl::StatusCode::kInvalidArgument &&
                   absl::StrContains(s.message(), "the message holds 16 bytes of Float"),
               s.ToString());
}

TEST(ShmCommunicator, BadPointToPointCallsAreInvalidArgument) {
  testing::ExpectAllRanksOk(LaunchScenario("shm_bad_calls", LaunchOptions{.world_size = 2}));
}

}  // namespace
}  // namespace ditserve::parallel
