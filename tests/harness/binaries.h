#pragma once

// Running the project's binaries from tests: where they are and a way to
// run some together (one ProcessGang: killed on timeout, never orphaned).

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "util/process_gang.h"

namespace ditserve::testing {

// CTest sets DITSERVE_BIN_DIR; run by hand, the binaries sit in ../bin next
// to the test's directory (build/tests -> build/bin).
std::string BinDir();

struct RunResult {
  util::ChildExit exit;
  std::string output;  // stdout and stderr
};

// Runs the commands together and returns each one's exit and output. A
// command still running at `timeout` is killed (a test failure).
std::vector<RunResult> RunAll(const std::vector<std::vector<std::string>>& commands,
                              absl::Duration timeout = absl::Seconds(300));
RunResult RunOne(const std::vector<std::string>& command, absl::Duration timeout = absl::Seconds(300));

// For gangs whose launchers are given an explicit --master_port (several
// "machines" on one host): picks a free port, runs commands_for(port) with
// RunAll, and when the first command (node 0) failed because another socket
// took the port before rank 0 bound it (EADDRINUSE), runs them again on a new
// port, at most three times in all.
std::vector<RunResult> RunAllOnAFreePort(
    const std::function<std::vector<std::vector<std::string>>(int port)>& commands_for,
    absl::Duration timeout = absl::Seconds(300));

// The same for one command with its exit folded into an int.
struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed; -1 when it could not start
  std::string output;  // stdout and stderr together
};
// Runs argv (argv[0] a path) with `env` added to the environment, waits up
// to `timeout` (then kills it) and returns its exit status and output.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::pair<std::string, std::string>>& env = {{"OMP_NUM_THREADS", "1"}},
                         absl::Duration timeout = absl::Minutes(10));

}  // namespace ditserve::testing
