#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace ditserve::worker::pipelines {

// Bytes this rank sent and wall seconds it spent in calls that communicate,
// per parallel method ("ulysses", "ring", "usp" when both, "pipefusion",
// "cfg", "data", "control"). USP's seconds include the attention compute it
// overlaps with its transfers; its wait_seconds are the part spent blocked
// on communication (what the overlap did not hide). For the other methods
// the timed scopes are communication only, so wait_seconds == seconds.
// Plain value; one thread updates it.
struct CommStats {
  struct Entry {
    int64_t bytes_sent = 0;
    double seconds = 0;
    double wait_seconds = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Entry> by_method;

  void Add(const std::string& method, int64_t bytes, double seconds) { Add(method, bytes, seconds, seconds); }
  void Add(const std::string& method, int64_t bytes, double seconds, double wait_seconds) {
    Entry& e = by_method[method];
    e.bytes_sent += bytes;
    e.seconds += seconds;
    e.wait_seconds += wait_seconds;
    ++e.calls;
  }
};

// Adds the wall time of its scope (and the bytes given) to one method; the
// whole scope counts as waiting unless SetWaitSeconds says how much did.
class CommTimer {
 public:
  CommTimer(CommStats* stats, std::string method) : stats_(stats), method_(std::move(method)) {}
  ~CommTimer() {
    if (stats_ == nullptr) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    stats_->Add(method_, bytes_, s, wait_seconds_ >= 0 ? wait_seconds_ : s);
  }
  void AddBytes(int64_t bytes) { bytes_ += bytes; }
  // For scopes that also compute (USP attention): the seconds spent blocked.
  void SetWaitSeconds(double seconds) { wait_seconds_ = seconds; }
  CommTimer(const CommTimer&) = delete;
  CommTimer& operator=(const CommTimer&) = delete;

 private:
  CommStats* stats_;
  std::string method_;
  int64_t bytes_ = 0;
  double wait_seconds_ = -1;  // < 0: the whole scope
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace ditserve::worker::pipelines
