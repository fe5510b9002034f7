// End-to-end tests of the launcher and the worker binaries.

#include <gtest/gtest.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "util/free_port.h"
#include "util/process_gang.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"

namespace ditserve {
namespace {

using testing::BinDir;
using testing::ReadTextFile;
using testing::RunAll;
using testing::RunOne;
using testing::RunResult;

TEST(DitserveRun, SelfCheckOverFourRanks) {
  const RunResult r = RunOne({BinDir() + "/ditserve-run", "--nproc=4", "--ulysses_degree=2",
                           "--ring_degree=2", "--selfcheck", "--selfcheck_elements=256", "--device=cpu"});
  ASSERT_TRUE(r.exit.ok()) << r.exit.Describe() << "\n" << r.output;
  EXPECT_NE(r.output.find("world 4 (dp=1 cfg=1 pp=1 ulysses=2 ring=2), device cpu"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("FAIL"), std::string::npos) << r.output;
  // Every group of the layout appears with every operation, and every row
  // is ok: parse "dim members operation bytes time ok".
  std::set<std::string> rows;
  for (absl::string_view line : absl::StrSplit(r.output, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() == 6 && f[5] == "ok" && f[0] != "group") rows.insert(absl::StrCat(f[0], f[1], " ", f[2]));
  }
  for (const char* group : {"ulysses[0,1]", "ulysses[2,3]", "ring[0,2]", "ring[1,3]",
                            "sequence[0,1,2,3]", "world[0,1,2,3]", "pipefusion[0]",
                            "pipefusion[3]", "cfg[1]", "data[2]"}) {
    for (const char* op : {"all_reduce(sum)", "all_reduce(max)", "all_gather", "all_to_all",
                           "broadcast", "barrier"}) {
      EXPECT_TRUE(rows.count(absl::StrCat(group, " ", op))) << group << " " << op << "\n" << r.output;
    }
  }
  EXPECT_TRUE(rows.count("ulysses[0,1] send/recv(ring)"));
  EXPECT_TRUE(rows.count("controlall send/recv(ring)"));
  // Groups: ulysses 2, ring 2, pipefusion 4, cfg 4, data 4, sequence 1,
  // world 1 = 18, six collectives each; send/recv on the 6 with more than
  // one member; the control group's 7.
  EXPECT_EQ(rows.size(), 18u * 6u + 6u + 7u) << r.output;
  EXPECT_NE(r.output.find("group        members                operation               bytes"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("self-check passed"), std::string::npos);
}

TEST(DitserveRun, TwoNodesOnOneMachine) {
  auto results = testing::RunAllOnAFreePort([](int port) {
    std::vector<std::vector<std::string>> commands;
    for (int node = 0; node < 2; ++node) {
      commands.push_back({BinDir() + "/ditserve-run", "--nproc=2", "--nnodes=2",
                          absl::StrCat("--node_rank=", node), absl::StrCat("--master_port=", port),
                          "--master_addr=127.0.0.1", "--ring_degree=2", "--use_cfg_parallel",
                          "--selfcheck", "--selfcheck_elements=64", "--device=cpu"});
    }
    return commands;
  });
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) EXPECT_TRUE(r.exit.ok()) << r.exit.Describe() << "\n" << r.output;
  EXPECT_NE(results[0].output.find("cfg          [0,2]"), std::string::npos) << results[0].output;
  EXPECT_NE(results[0].output.find("self-check passed"), std::string::npos);
}

// A --master_port that ditserve-run picked can be taken by another process
// before rank 0 binds it. Rank 0 then exits 3 at once and ditserve-run starts
// the gang again on a new port; a fake rank 0 that finds its port "taken" on
// its first two starts shows the third start succeeding.
TEST(DitserveRun, APickedPortTakenBeforeRankZeroBindsItStartsTheGangAgain) {
  const std::string dir = ::testing::TempDir();
  const std::string starts = absl::StrCat(dir, "/rank0_starts_", getpid());
  const std::string script = absl::StrCat(dir, "/port_taken_worker_", getpid(), ".sh");
  {
    std::ofstream out(script);
    out << "#!/bin/sh\n"
        << "case \" $* \" in *\" --rank=0 \"*)\n"
        << "  for a in \"$@\"; do case $a in --master_port=*) echo ${a#--master_port=} >> " << starts
        << ";; esac; done\n"
        << "  [ $(wc -l < " << starts << ") -le 2 ] && { echo 'EADDRINUSE' >&2; exit 3; };;\n"
        << "esac\n"
        << "exit 0\n";
  }
  chmod(script.c_str(), 0755);
  unlink(starts.c_str());
  const RunResult r = RunOne({BinDir() + "/ditserve-run", "--nproc=2", "--ring_degree=2",
                              "--worker_binary=" + script, "--shutdown_grace_s=2"});
  EXPECT_TRUE(r.exit.ok()) << r.exit.Describe() << "\n" << r.output;
  std::vector<std::string> ports = absl::StrSplit(ReadTextFile(starts), '\n', absl::SkipEmpty());
  ASSERT_EQ(ports.size(), 3u) << r.output;
  for (size_t i = 0; i < ports.size(); ++i) {
    int port = 0;
    EXPECT_TRUE(absl::SimpleAtoi(ports[i], &port) && port > 0 && port < 65536) << ports[i];
    if (i + 1 < ports.size()) {
      EXPECT_NE(r.output.find(absl::StrCat("ditserve-run: port ", ports[i],
                                           " was taken before rank 0 bound it; starting again")),
                std::string::npos)
          << r.output;
    }
  }
  EXPECT_EQ(r.output.find(absl::StrCat("port ", ports.back(), " was taken")), std::string::npos) << r.output;
  unlink(script.c_str());
  unlink(starts.c_str());
}

// A port the user named is theirs: when it is held, the gang fails naming it,
// with no new port tried.
TEST(DitserveRun, AGivenPortThatIsHeldFailsNamingIt) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  const RunResult r = RunOne({BinDir() + "/ditserve-run", "--nproc=2", "--ring_degree=2", "--selfcheck",
                              "--selfcheck_elements=64", "--device=cpu", absl::StrCat("--master_port=", port),
                              "--shutdown_grace_s=2"});
  close(fd);
  EXPECT_EQ(r.exit.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(absl::StrCat("ditserve-worker: rank 0 of 2 could not join the rendezvous at 127.0.0.1:",
                                       port)),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("EADDRINUSE"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ditserve-run: rank 0 exited with code 3; the other ranks were stopped"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("starting again"), std::string::npos) << r.output;
}

TEST(DitserveRun, BadDegreesAreAOneLineError) {
  const RunResult r = RunOne({BinDir() + "/ditserve-run", "--nproc=4", "--ulysses_degree=3", "--selfcheck"});
  EXPECT_TRUE(r.exit.exited);
  EXPECT_EQ(r.exit.exit_code, 2);
  EXPECT_EQ(r.output,
            "ditserve-run: the product of the parallel degrees (dp 1 x cfg 1 x pp 1 x ulysses 3 x "
            "ring 1 = 3) must equal the world size 4 (--nproc 4 x --nnodes 1)\n");
  const RunResult zero = RunOne({BinDir() + "/ditserve-run", "--nproc=0"});
  EXPECT_EQ(zero.exit.exit_code, 2);
  EXPECT_EQ(zero.output, "ditserve-run: --nproc must be in [1, 1024], got 0\n");
  const RunResult port = RunOne({BinDir() + "/ditserve-run", "--nnodes=2", "--nproc=1", "--ring_degree=2"});
  EXPECT_EQ(port.exit.exit_code, 2);
  EXPECT_EQ(port.output, "ditserve-run: --master_port is required when --nnodes > 1\n");
}

// Every fake rank also leaves a shared-memory name, as a rank that dies
// between creating a segment and unlinking it does; the launcher removes
// them once the ranks are gone.
TEST(DitserveRun, DeadRankStopsTheGangWithoutOrphans) {
  const std::string dir = ::testing::TempDir();
  const std::string pids = absl::StrCat(dir, "/pids_", getpid());
  const std::string segments = absl::StrCat(dir, "/segments_", getpid());
  const std::string script = absl::StrCat(dir, "/fake_worker_", getpid(), ".sh");
  {
    std::ofstream out(script);
    out << "#!/bin/sh\n"
        << ": > /dev/shm/ditserve-$$-00000000deadbeef && echo /dev/shm/ditserve-$$-00000000deadbeef >> " << segments
        << "\n"
        << "case \" $* \" in *\" --rank=1 \"*) sleep 0.5; exit 3;; esac\n"
        << "echo $$ >> " << pids << "\n"
        << "exec sleep 300\n";
  }
  chmod(script.c_str(), 0755);
  unlink(pids.c_str());
  unlink(segments.c_str());
  const RunResult r = RunOne({BinDir() + "/ditserve-run", "--nproc=3", "--ring_degree=3",
                           "--worker_binary=" + script, "--shutdown_grace_s=2"});
  EXPECT_EQ(r.exit.exit_code, 1);
  EXPECT_NE(r.output.find("ditserve-run: rank 1 exited with code 3; the other ranks were stopped"),
            std::string::npos)
      << r.output;
  int alive = 0, seen = 0;
  for (absl::string_view line : absl::StrSplit(ReadTextFile(pids), '\n', absl::SkipEmpty())) {
    int pid = 0;
    ASSERT_TRUE(absl::SimpleAtoi(line, &pid));
    ++seen;
    if (kill(pid, 0) == 0) ++alive;
  }
  EXPECT_EQ(seen, 2);
  EXPECT_EQ(alive, 0);
  int names = 0;
  for (absl::string_view line : absl::StrSplit(ReadTextFile(segments), '\n', absl::SkipEmpty())) {
    ++names;
    struct stat st;
    EXPECT_NE(stat(std::string(line).c_str(), &st), 0) << line << " was left behind";
  }
  EXPECT_EQ(names, 3);
  unlink(segments.c_str());
  unlink(pids.c_str());
  unlink(script.c_str());
}

TEST(DitserveWorker, ErrorsAreOneLine) {
  const RunResult none = RunOne({BinDir() + "/ditserve-worker", "--master_port=1"});
  EXPECT_EQ(none.exit.exit_code, 2);
  EXPECT_EQ(none.output, "ditserve-worker: nothing to do: pass --selfcheck or --model\n");
  const RunResult bad = RunOne({BinDir() + "/ditserve-worker", "--world_size=2", "--ring_degree=3"});
  EXPECT_EQ(bad.exit.exit_code, 2);
  EXPECT_NE(bad.output.find("must equal the world size 2"), std::string::npos) << bad.output;
  const RunResult dev = RunOne({BinDir() + "/ditserve-worker", "--selfcheck", "--device=tpu"});
  EXPECT_EQ(dev.exit.exit_code, 2);
  EXPECT_EQ(dev.output, "ditserve-worker: --device must be cpu, cuda or auto, got 'tpu'\n");
}

}  // namespace
}  // namespace ditserve
