#include "parallel/rendezvous.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "tests/harness/multiproc.h"
#include "util/free_port.h"

namespace ditserve::parallel {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(Rendezvous, MasterWithoutPeersTimesOut) {
  auto port = util::PickFreePort();
  ASSERT_TRUE(port.ok());
  RendezvousOptions o;
  o.master_port = *port;
  o.rank = 0;
  o.world_size = 2;
  o.timeout = absl::Seconds(1);
  const auto start = std::chrono::steady_clock::now();
  auto store = JoinRendezvous(o);
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(store.status().code() == absl::StatusCode::kDeadlineExceeded ||
              store.status().code() == absl::StatusCode::kUnavailable)
      << store.status();
  EXPECT_NE(store.status().message().find(
                absl::StrCat("rank 0 of 2 could not join the rendezvous at 127.0.0.1:", *port,
                             " within 1s")),
            std::string::npos)
      << store.status();
  EXPECT_LT(SecondsSince(start), 30);
}

// Rank 0 whose port another socket holds fails at once with ALREADY_EXISTS,
// which the worker turns into exit 3 for its launcher to pick a new port.
TEST(Rendezvous, MasterOnAHeldPortIsAlreadyExists) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  RendezvousOptions o;
  o.master_port = ntohs(addr.sin_port);
  o.rank = 0;
  o.world_size = 2;
  o.timeout = absl::Seconds(30);
  const auto start = std::chrono::steady_clock::now();
  auto store = JoinRendezvous(o);
  close(fd);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kAlreadyExists) << store.status();
  EXPECT_NE(store.status().message().find(absl::StrCat("rank 0 of 2 could not join the rendezvous at 127.0.0.1:",
                                                       o.master_port)),
            std::string::npos)
      << store.status();
  EXPECT_LT(SecondsSince(start), 20);
}

TEST(Rendezvous, WorkerWithoutMasterTimesOut) {
  auto port = util::PickFreePort();
  ASSERT_TRUE(port.ok());
  RendezvousOptions o;
  o.master_port = *port;
  o.rank = 1;
  o.world_size = 2;
  o.timeout = absl::Seconds(2);
  const auto start = std::chrono::steady_clock::now();
  auto store = JoinRendezvous(o);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("rank 1 of 2"), std::string::npos) << store.status();
  EXPECT_LT(SecondsSince(start), 30);
}

TEST(Rendezvous, RejectsBadOptions) {
  RendezvousOptions o;
  o.master_port = 1234;
  o.world_size = 2;
  o.rank = 2;
  EXPECT_EQ(JoinRendezvous(o).status().message(), "--rank must be in [0, 2), got 2");
  o.rank = 0;
  o.master_port = 0;
  EXPECT_EQ(JoinRendezvous(o).status().message(), "--master_port must be in [1, 65535], got 0");
  o.master_port = 1234;
  o.world_size = 0;
  EXPECT_EQ(JoinRendezvous(o).status().code(), absl::StatusCode::kInvalidArgument);
}

DITSERVE_SCENARIO(rendezvous_exchange) {
  RendezvousOptions o;
  o.master_port = ctx.master_port;
  o.rank = ctx.rank;
  o.world_size = ctx.world_size;
  o.timeout = absl::Seconds(60);
  auto store = JoinRendezvous(o);
  if (!store.ok()) return store.status();
  const std::string mine = absl::StrCat("hello from ", ctx.rank);
  (*store)->set(absl::StrCat("k", ctx.rank), std::vector<uint8_t>(mine.begin(), mine.end()));
  for (int r = 0; r < ctx.world_size; ++r) {
    std::vector<uint8_t> v = (*store)->get(absl::StrCat("k", r));
    if (std::string(v.begin(), v.end()) != absl::StrCat("hello from ", r)) {
      return absl::InternalError("wrong value");
    }
  }
  (*store)->add("done", 1);
  // Rank 0 hosts the store: it leaves last.
  if (ctx.rank == 0) {
    while ((*store)->add("done", 0) < ctx.world_size) usleep(10000);
  }
  return absl::OkStatus();
}

TEST(Rendezvous, RanksExchangeThroughTheStore) {
  testing::ExpectAllRanksOk(
      testing::LaunchScenario("rendezvous_exchange", testing::LaunchOptions{.world_size = 4}));
}

}  // namespace
}  // namespace ditserve::parallel
