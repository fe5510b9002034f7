#pragma once

// The multi-process test harness: a test binary re-executes itself as W
// ranks on localhost, each running a named scenario, and the parent gathers
// their outcomes. Every child is killed when the launch fails or times out
// (ProcessGang), so no test leaves processes behind.
//
// Usage in a test file:
//   DITSERVE_SCENARIO(my_scenario) { ... return absl::OkStatus(); }
//   TEST(X, Y) { auto out = LaunchScenario("my_scenario", {.world_size = 4});
//                ExpectAllRanksOk(out); }
// and link ditserve_test_main_multiproc (which provides main()).

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ditserve::testing {

// What a rank's scenario gets.
struct RankContext {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::vector<std::string> args;  // LaunchOptions::args, verbatim
};

using Scenario = std::function<absl::Status(const RankContext&)>;

// Registers a scenario under `name` (at static-initialisation time).
bool RegisterScenario(const std::string& name, Scenario scenario);

#define DITSERVE_SCENARIO(name)                                                     \
  static absl::Status DitserveScenario_##name(const ::ditserve::testing::RankContext&); \
  static const bool ditserve_scenario_registered_##name =                            \
      ::ditserve::testing::RegisterScenario(#name, DitserveScenario_##name);         \
  static absl::Status DitserveScenario_##name(const ::ditserve::testing::RankContext& ctx)

struct LaunchOptions {
  int world_size = 2;
  absl::Duration timeout = absl::Seconds(180);
  std::vector<std::string> args;
};

struct RankOutcome {
  int rank = 0;
  bool exited = false;
  int exit_code = 0;
  int term_signal = 0;
  bool timed_out = false;  // the launch timed out and this rank was killed
  std::string log;         // its stdout and stderr
  bool ok() const { return exited && exit_code == 0 && !timed_out; }
};

// Runs `scenario` on world_size fresh processes with a free TCPStore port.
// Returns one outcome per rank, or an error if the processes could not be
// started. A rank "fails" when its scenario returns non-OK (exit code 1,
// with the status printed) or it crashes.
absl::StatusOr<std::vector<RankOutcome>> LaunchScenario(const std::string& scenario,
                                                        const LaunchOptions& options);

// gtest expectation: every rank exited 0; prints failing ranks' logs.
void ExpectAllRanksOk(const absl::StatusOr<std::vector<RankOutcome>>& outcomes);

// main() of multiproc test binaries: runs a scenario when started as a rank,
// otherwise the gtest suite.
int MultiprocMain(int argc, char** argv);

}  // namespace ditserve::testing
