#include "tests/harness/binaries.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "util/free_port.h"

namespace ditserve::testing {

std::string BinDir() {
  if (const char* dir = std::getenv("DITSERVE_BIN_DIR")) return dir;
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("./x");
  return self.substr(0, self.rfind('/')) + "/../bin";
}

namespace {

std::vector<RunResult> RunWithEnv(const std::vector<std::vector<std::string>>& commands,
                                  const std::vector<std::pair<std::string, std::string>>& env,
                                  absl::Duration timeout) {
  static int serial = 0;  // distinct log names within this test process
  std::vector<util::ChildSpec> specs;
  std::vector<std::string> paths;
  for (size_t i = 0; i < commands.size(); ++i) {
    util::ChildSpec spec;
    spec.argv = commands[i];
    spec.output_path = absl::StrCat(::testing::TempDir(), "/run_", getpid(), "_", serial++, ".log");
    spec.env = env;
    paths.push_back(spec.output_path);
    specs.push_back(std::move(spec));
  }
  auto gang = util::ProcessGang::Start(std::move(specs));
  EXPECT_TRUE(gang.ok()) << gang.status();
  if (!gang.ok()) return {};
  auto r = (*gang)->Wait(absl::Now() + timeout, false, absl::Seconds(5));
  EXPECT_FALSE(r.timed_out);
  std::vector<RunResult> out;
  for (size_t i = 0; i < commands.size(); ++i) {
    out.push_back({r.exits[i], ReadTextFile(paths[i])});
    unlink(paths[i].c_str());
  }
  return out;
}

}  // namespace

std::vector<RunResult> RunAll(const std::vector<std::vector<std::string>>& commands, absl::Duration timeout) {
  return RunWithEnv(commands, {{"OMP_NUM_THREADS", "1"}}, timeout);
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::pair<std::string, std::string>>& env, absl::Duration timeout) {
  auto all = RunWithEnv({argv}, env, timeout);
  if (all.empty()) return CommandResult{};
  const util::ChildExit& e = all[0].exit;
  return CommandResult{e.exited ? e.exit_code : 128 + e.term_signal, all[0].output};
}

RunResult RunOne(const std::vector<std::string>& command, absl::Duration timeout) {
  auto all = RunAll({command}, timeout);
  return all.empty() ? RunResult{} : all[0];
}

std::vector<RunResult> RunAllOnAFreePort(
    const std::function<std::vector<std::vector<std::string>>(int port)>& commands_for, absl::Duration timeout) {
  constexpr int kAttempts = 3;
  std::vector<RunResult> results;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    auto port = util::PickFreePort();
    if (!port.ok()) {
      ADD_FAILURE() << port.status();
      return {};
    }
    results = RunAll(commands_for(*port), timeout);
    if (results.empty() || results.front().exit.ok() ||
        results.front().output.find("EADDRINUSE") == std::string::npos) {
      break;
    }
  }
  return results;
}

}  // namespace ditserve::testing
