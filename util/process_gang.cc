#include "util/process_gang.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace ditserve::util {
namespace {

constexpr absl::Duration kPollInterval = absl::Milliseconds(10);

// The environment for a child, prepared before fork (nothing after fork may
// allocate).
std::vector<std::string> MergedEnvironment(
    const std::vector<std::pair<std::string, std::string>>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    bool overridden = false;
    for (const auto& [key, value] : extra) {
      if (entry.size() > key.size() && entry.compare(0, key.size(), key) == 0 &&
          entry[key.size()] == '=') {
        overridden = true;
        break;
      }
    }
    if (!overridden) env.push_back(std::move(entry));
  }
  for (const auto& [key, value] : extra) env.push_back(absl::StrCat(key, "=", value));
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string ChildExit::Describe() const {
  if (exited) return absl::StrCat("exited with code ", exit_code);
  return absl::StrCat("killed by signal ", term_signal, " (", strsignal(term_signal), ")",
                      killed_by_gang ? ", sent by the launcher" : "");
}

absl::StatusOr<std::unique_ptr<ProcessGang>> ProcessGang::Start(std::vector<ChildSpec> specs) {
  std::unique_ptr<ProcessGang> gang(new ProcessGang());
  const pid_t parent = getpid();
  for (size_t i = 0; i < specs.size(); ++i) {
    ChildSpec& spec = specs[i];
    if (spec.argv.empty()) return absl::InvalidArgumentError("ChildSpec.argv is empty");
    if (access(spec.argv[0].c_str(), X_OK) != 0) {
      return absl::NotFoundError(
          absl::StrCat("cannot execute ", spec.argv[0], ": ", strerror(errno)));
    }
    std::vector<std::string> env = MergedEnvironment(spec.env);
    std::vector<char*> argv_c = CStrings(spec.argv);
    std::vector<char*> env_c = CStrings(env);
    int out_fd = -1;
    if (!spec.output_path.empty()) {
      out_fd = open(spec.output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (out_fd < 0) {
        return absl::InternalError(
            absl::StrCat("cannot open ", spec.output_path, ": ", strerror(errno)));
      }
    }
    const pid_t pid = fork();
    if (pid < 0) {
      if (out_fd >= 0) close(out_fd);
      return absl::InternalError(absl::StrCat("fork failed: ", strerror(errno)));
    }
    if (pid == 0) {
      // Child: async-signal-safe calls only until exec.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);  // the parent died before prctl
      setpgid(0, 0);  // own process group: signals reach its children too
      if (out_fd >= 0) {
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
      }
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execve(argv_c[0], argv_c.data(), env_c.data());
      _exit(127);
    }
    if (out_fd >= 0) close(out_fd);
    setpgid(pid, pid);  // also here, so no signal can precede the child's own call
    Child child;
    child.pid = pid;
    child.running = true;
    child.exit.index = static_cast<int>(i);
    child.exit.pid = pid;
    gang->children_.push_back(child);
  }
  return gang;
}

ProcessGang::~ProcessGang() { KillAll(); }

std::vector<pid_t> ProcessGang::pids() const {
  std::vector<pid_t> out;
  for (const Child& c : children_) out.push_back(c.pid);
  return out;
}

std::vector<int> ProcessGang::ReapExited() {
  std::vector<int> reaped;
  for (size_t i = 0; i < children_.size(); ++i) {
    Child& c = children_[i];
    if (!c.running) continue;
    int status = 0;
    const pid_t r = waitpid(c.pid, &status, WNOHANG);
    if (r == 0) continue;
    c.running = false;
    kill(-c.pid, SIGKILL);  // whatever the child left behind in its group
    if (r < 0) {  // already reaped elsewhere: report as a failure
      c.exit.exited = true;
      c.exit.exit_code = 255;
    } else if (WIFEXITED(status)) {
      c.exit.exited = true;
      c.exit.exit_code = WEXITSTATUS(status);
    } else {
      c.exit.exited = false;
      c.exit.term_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    }
    reaped.push_back(static_cast<int>(i));
  }
  return reaped;
}

// Signals the child's whole process group (the child and anything it
// started), falling back to the child alone.
static void SignalGroup(pid_t pid, int sig) {
  if (kill(-pid, sig) != 0) kill(pid, sig);
}

void ProcessGang::Signal(int sig) {
  for (Child& c : children_) {
    if (c.running) {
      SignalGroup(c.pid, sig);
      c.exit.killed_by_gang = true;
    }
  }
}

void ProcessGang::TerminateRunning(absl::Duration grace) {
  Signal(SIGTERM);
  const absl::Time kill_at = absl::Now() + grace;
  while (absl::Now() < kill_at) {
    ReapExited();
    bool any = false;
    for (const Child& c : children_) any |= c.running;
    if (!any) return;
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(kPollInterval));
  }
  KillAll();
}

void ProcessGang::KillAll() {
  for (Child& c : children_) {
    if (!c.running) continue;
    SignalGroup(c.pid, SIGKILL);
    c.exit.killed_by_gang = true;
    int status = 0;
    if (waitpid(c.pid, &status, 0) == c.pid) {
      c.exit.exited = WIFEXITED(status);
      c.exit.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
      c.exit.term_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    }
    c.running = false;
  }
}

GangWaitResult ProcessGang::Wait(absl::Time deadline, bool stop_on_failure,
                                 absl::Duration grace, const std::function<bool()>& should_stop) {
  GangWaitResult result;
  while (true) {
    for (int i : ReapExited()) {
      if (!children_[i].exit.ok() && !result.first_failure.has_value()) {
        result.first_failure = i;
      }
    }
    bool any_running = false;
    for (const Child& c : children_) any_running |= c.running;
    if (!any_running) break;
    if (stop_on_failure && result.first_failure.has_value()) {
      TerminateRunning(grace);
      break;
    }
    if (should_stop && should_stop()) {
      result.stopped = true;
      TerminateRunning(grace);
      break;
    }
    if (absl::Now() >= deadline) {
      result.timed_out = true;
      TerminateRunning(grace);
      break;
    }
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(kPollInterval));
  }
  for (const Child& c : children_) result.exits.push_back(c.exit);
  return result;
}

}  // namespace ditserve::util
