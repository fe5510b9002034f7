#include "util/process_gang.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "util/free_port.h"

namespace ditserve::util {
namespace {

ChildSpec Sh(const std::string& script) { return ChildSpec{{"/bin/sh", "-c", script}, {}, ""}; }

// Alive and not a zombie (an orphan's zombie waits for init to reap it).
bool Alive(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

TEST(ProcessGang, AllSucceed) {
  auto gang = ProcessGang::Start({Sh("exit 0"), Sh("exit 0")});
  ASSERT_TRUE(gang.ok()) << gang.status();
  auto r = (*gang)->Wait(absl::Now() + absl::Seconds(60), true, absl::Seconds(1));
  EXPECT_FALSE(r.timed_out);
  EXPECT_FALSE(r.first_failure.has_value());
  ASSERT_EQ(r.exits.size(), 2u);
  EXPECT_TRUE(r.exits[0].ok());
  EXPECT_TRUE(r.exits[1].ok());
}

TEST(ProcessGang, FailureStopsTheOthers) {
  auto gang = ProcessGang::Start({Sh("sleep 300"), Sh("exit 3"), Sh("sleep 300")});
  ASSERT_TRUE(gang.ok());
  const auto pids = (*gang)->pids();
  auto r = (*gang)->Wait(absl::Now() + absl::Seconds(60), true, absl::Seconds(1));
  ASSERT_TRUE(r.first_failure.has_value());
  EXPECT_EQ(*r.first_failure, 1);
  EXPECT_TRUE(r.exits[1].exited);
  EXPECT_EQ(r.exits[1].exit_code, 3);
  EXPECT_EQ(r.exits[1].Describe(), "exited with code 3");
  EXPECT_FALSE(r.exits[0].exited);
  EXPECT_EQ(r.exits[0].term_signal, SIGTERM);
  EXPECT_TRUE(r.exits[0].killed_by_gang);
  for (pid_t p : pids) EXPECT_FALSE(Alive(p)) << p;
}

TEST(ProcessGang, SigkillAfterGraceWhenSigtermIsIgnored) {
  auto gang = ProcessGang::Start({Sh("trap '' TERM; exec sleep 300"), Sh("exit 1")});
  ASSERT_TRUE(gang.ok());
  auto r = (*gang)->Wait(absl::Now() + absl::Seconds(60), true, absl::Milliseconds(300));
  EXPECT_FALSE(r.exits[0].exited);
  EXPECT_EQ(r.exits[0].term_signal, SIGKILL);
}

TEST(ProcessGang, DeadlineKillsEveryone) {
  auto gang = ProcessGang::Start({Sh("sleep 300"), Sh("sleep 300")});
  ASSERT_TRUE(gang.ok());
  const auto pids = (*gang)->pids();
  auto r = (*gang)->Wait(absl::Now() + absl::Milliseconds(200), false, absl::Seconds(1));
  EXPECT_TRUE(r.timed_out);
  for (pid_t p : pids) EXPECT_FALSE(Alive(p));
}

TEST(ProcessGang, WithoutStopOnFailureWaitsForAll) {
  auto gang = ProcessGang::Start({Sh("exit 4"), Sh("sleep 0.3; exit 0")});
  ASSERT_TRUE(gang.ok());
  auto r = (*gang)->Wait(absl::Now() + absl::Seconds(60), false, absl::Seconds(1));
  EXPECT_EQ(r.first_failure, 0);
  EXPECT_TRUE(r.exits[1].ok());
}

TEST(ProcessGang, ShouldStopEndsTheGang) {
  auto gang = ProcessGang::Start({Sh("sleep 300")});
  ASSERT_TRUE(gang.ok());
  int polls = 0;
  auto r = (*gang)->Wait(absl::InfiniteFuture(), true, absl::Seconds(1), [&] { return ++polls > 3; });
  EXPECT_TRUE(r.stopped);
  EXPECT_FALSE(r.exits[0].exited);
}

TEST(ProcessGang, DestructorKillsChildren) {
  std::vector<pid_t> pids;
  {
    auto gang = ProcessGang::Start({Sh("sleep 300"), Sh("sleep 300")});
    ASSERT_TRUE(gang.ok());
    pids = (*gang)->pids();
    for (pid_t p : pids) EXPECT_TRUE(Alive(p));
  }
  for (pid_t p : pids) EXPECT_FALSE(Alive(p));
}

TEST(ProcessGang, GrandchildrenDieWithTheirParent) {
  const std::string pid_file = ::testing::TempDir() + "/grandchild_pid";
  unlink(pid_file.c_str());
  auto gang = ProcessGang::Start(
      {Sh("sleep 300 & echo $! > " + pid_file + "; wait"), Sh("sleep 0.5; exit 2")});
  ASSERT_TRUE(gang.ok());
  auto r = (*gang)->Wait(absl::Now() + absl::Seconds(60), true, absl::Seconds(1));
  ASSERT_EQ(r.first_failure, 1);
  std::ifstream in(pid_file);
  pid_t grandchild = 0;
  in >> grandchild;
  ASSERT_GT(grandchild, 0);
  // Killed with its parent's process group; reaped by init shortly after.
  for (int i = 0; i < 200 && Alive(grandchild); ++i) usleep(10000);
  EXPECT_FALSE(Alive(grandchild));
}

TEST(ProcessGang, OutputAndEnvironment) {
  const std::string path = ::testing::TempDir() + "/gang_output.txt";
  ChildSpec spec = Sh("echo out=$DITSERVE_X; echo err >&2");
  spec.env = {{"DITSERVE_X", "42"}};
  spec.output_path = path;
  auto gang = ProcessGang::Start({spec});
  ASSERT_TRUE(gang.ok());
  auto r = (*gang)->Wait(absl::Now() + absl::Seconds(60), true, absl::Seconds(1));
  ASSERT_TRUE(r.exits[0].ok());
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "out=42\nerr\n");
}

TEST(ProcessGang, MissingExecutableIsAnError) {
  auto gang = ProcessGang::Start({ChildSpec{{"/nonexistent/ditserve-worker"}, {}, ""}});
  ASSERT_FALSE(gang.ok());
  EXPECT_EQ(gang.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gang.status().message().find("/nonexistent/ditserve-worker"), std::string::npos);
}

TEST(FreePort, IsInRangeAndBindable) {
  auto port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

}  // namespace
}  // namespace ditserve::util
