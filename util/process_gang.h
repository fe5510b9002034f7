#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ditserve::util {

// One process to start.
struct ChildSpec {
  // argv[0] is the path of the executable (no PATH search).
  std::vector<std::string> argv;
  // Added to (or overriding) the parent's environment.
  std::vector<std::pair<std::string, std::string>> env;
  // Empty: the child shares the parent's stdout and stderr. Otherwise both
  // go to this file (created or truncated).
  std::string output_path;
};

// How one child ended.
struct ChildExit {
  int index = -1;
  pid_t pid = -1;
  bool exited = false;   // true: exit_code is valid; false: term_signal is
  int exit_code = 0;
  int term_signal = 0;
  bool killed_by_gang = false;  // we sent the signal that ended it
  bool ok() const { return exited && exit_code == 0; }
  // "exited with code 3", "killed by signal 9 (Killed)".
  std::string Describe() const;
};

struct GangWaitResult {
  std::vector<ChildExit> exits;         // one per child, in start order
  bool timed_out = false;               // the deadline passed first
  bool stopped = false;                 // should_stop returned true
  std::optional<int> first_failure;     // index of the first child to fail
};

// A set of child processes started together and ended together: the
// launcher of a gang of ranks, and the multi-process test harness.
//
// Contract: every child runs in its own process group and gets
// PR_SET_PDEATHSIG(SIGKILL), so it dies if the owning process dies. Signals
// go to a child's whole group, and when a child ends its group is killed, so
// nothing it started outlives it. The destructor SIGKILLs and reaps every
// child still running: no process outlives its ProcessGang. Not thread-safe: one owner
// thread calls every method.
class ProcessGang {
 public:
  // Starts every child. If one cannot be started, those already started are
  // killed and the error names the executable.
  static absl::StatusOr<std::unique_ptr<ProcessGang>> Start(std::vector<ChildSpec> specs);

  ProcessGang(const ProcessGang&) = delete;
  ProcessGang& operator=(const ProcessGang&) = delete;
  ~ProcessGang();

  // Waits until every child has exited, or (with stop_on_failure) one has
  // failed, or `deadline` passes, or `should_stop` (polled every few ms, may
  // be empty) returns true. On failure, timeout or stop, the children still
  // running get SIGTERM and, after `grace`, SIGKILL; all are reaped before
  // this returns.
  GangWaitResult Wait(absl::Time deadline, bool stop_on_failure, absl::Duration grace,
                      const std::function<bool()>& should_stop = {});

  // Sends `sig` to every child still running.
  void Signal(int sig);

  // SIGKILLs and reaps every child still running. Idempotent.
  void KillAll();

  std::vector<pid_t> pids() const;
  size_t size() const { return children_.size(); }

 private:
  struct Child {
    pid_t pid = -1;
    bool running = false;
    ChildExit exit;
  };
  ProcessGang() = default;
  // Reaps children that have exited (non-blocking); returns the indices reaped.
  std::vector<int> ReapExited();
  void TerminateRunning(absl::Duration grace);

  std::vector<Child> children_;
};

}  // namespace ditserve::util
