#pragma once

// Runs the project's binaries from tests, as a user runs them.

#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace ditserve::testing {

// The directory of the built binaries: $DITSERVE_BIN_DIR (CTest sets it),
// else ../bin next to the test executable.
std::string BinDir();

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
