#include "tests/harness/multiproc.h"

#include <gtest/gtest.h>
#include <limits.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "util/free_port.h"
#include "util/process_gang.h"

namespace ditserve::testing {
namespace {

constexpr char kScenarioFlag[] = "--ditserve_scenario=";

std::map<std::string, Scenario>& Registry() {
  static auto* registry = new std::map<std::string, Scenario>();
  return *registry;
}

std::string SelfExe() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs as a rank: argv = exe --ditserve_scenario=NAME RANK WORLD PORT args...
int RunRank(int argc, char** argv) {
  const std::string name = argv[1] + std::strlen(kScenarioFlag);
  RankContext ctx;
  if (argc < 5 || !absl::SimpleAtoi(argv[2], &ctx.rank) ||
      !absl::SimpleAtoi(argv[3], &ctx.world_size) || !absl::SimpleAtoi(argv[4], &ctx.master_port)) {
    std::fprintf(stderr, "bad rank arguments\n");
    return 2;
  }
  for (int i = 5; i < argc; ++i) ctx.args.push_back(argv[i]);
  auto it = Registry().find(name);
  if (it == Registry().end()) {
    std::fprintf(stderr, "unknown scenario %s\n", name.c_str());
    return 2;
  }
  absl::Status s;
  try {
    s = it->second(ctx);
  } catch (const std::exception& e) {
    s = absl::InternalError(absl::StrCat("uncaught exception: ", e.what()));
  }
  if (!s.ok()) {
    std::fprintf(stderr, "rank %d: scenario %s failed: %s\n", ctx.rank, name.c_str(),
                 s.ToString().c_str());
    std::fflush(stderr);
    return 1;
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

bool RegisterScenario(const std::string& name, Scenario scenario) {
  Registry()[name] = std::move(scenario);
  return true;
}

namespace {

// One launch of the gang on `port`.
absl::StatusOr<std::vector<RankOutcome>> LaunchOnce(const std::string& scenario, const LaunchOptions& options,
                                                    int port) {
  char dir_template[] = "/tmp/ditserve-test-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return absl::InternalError("mkdtemp failed");
  const std::string dir = dir_template;
  std::vector<util::ChildSpec> specs;
  for (int r = 0; r < options.world_size; ++r) {
    util::ChildSpec spec;
    spec.argv = {SelfExe(), absl::StrCat(kScenarioFlag, scenario), absl::StrCat(r),
                 absl::StrCat(options.world_size), absl::StrCat(port)};
    for (const auto& a : options.args) spec.argv.push_back(a);
    spec.output_path = absl::StrCat(dir, "/rank", r, ".log");
    // One thread per rank: W ranks share a 2-core machine.
    spec.env = {{"OMP_NUM_THREADS", "1"}};
    specs.push_back(std::move(spec));
  }
  auto gang = util::ProcessGang::Start(std::move(specs));
  if (!gang.ok()) return gang.status();
  const util::GangWaitResult result = (*gang)->Wait(
      absl::Now() + options.timeout, /*stop_on_failure=*/false, absl::Seconds(2));
  std::vector<RankOutcome> outcomes;
  for (int r = 0; r < options.world_size; ++r) {
    const util::ChildExit& e = result.exits[r];
    RankOutcome o;
    o.rank = r;
    o.exited = e.exited;
    o.exit_code = e.exit_code;
    o.term_signal = e.term_signal;
    o.timed_out = result.timed_out && e.killed_by_gang;
    const std::string log_path = absl::StrCat(dir, "/rank", r, ".log");
    o.log = ReadFile(log_path);
    unlink(log_path.c_str());
    outcomes.push_back(std::move(o));
  }
  rmdir(dir.c_str());
  return outcomes;
}

}  // namespace

absl::StatusOr<std::vector<RankOutcome>> LaunchScenario(const std::string& scenario,
                                                        const LaunchOptions& options) {
  // PickFreePort's port is free when picked, not when rank 0 binds it: a
  // process started meanwhile (another test, an outgoing connection's
  // ephemeral port) can take it. Only then, launch again on a new port.
  constexpr int kAttempts = 3;
  absl::StatusOr<std::vector<RankOutcome>> outcomes;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    auto port = util::PickFreePort();
    if (!port.ok()) return port.status();
    outcomes = LaunchOnce(scenario, options, *port);
    if (!outcomes.ok() || outcomes->empty() || outcomes->front().ok() ||
        outcomes->front().log.find("EADDRINUSE") == std::string::npos) {
      return outcomes;
    }
  }
  return outcomes;
}

void ExpectAllRanksOk(const absl::StatusOr<std::vector<RankOutcome>>& outcomes) {
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  for (const RankOutcome& o : *outcomes) {
    EXPECT_TRUE(o.ok()) << "rank " << o.rank
                        << (o.timed_out ? " timed out" : "")
                        << (o.exited ? absl::StrCat(" exited with ", o.exit_code)
                                     : absl::StrCat(" killed by signal ", o.term_signal))
                        << "\n--- rank " << o.rank << " log ---\n"
                        << o.log;
  }
}

int MultiprocMain(int argc, char** argv) {
  if (argc >= 2 && absl::StartsWith(argv[1], kScenarioFlag)) return RunRank(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

}  // namespace ditserve::testing
