#pragma once

// Running the project's binaries from tests: where they are and a way to
// run some together (one ProcessGang: killed on timeout, never orphaned).

#include <string>
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

}  // namespace ditserve::testing
