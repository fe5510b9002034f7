#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace ditserve::worker::pipelines {

// Bytes this rank sent and wall seconds it spent in calls that communicate,
// per parallel method ("ulysses", "ring", "usp" when both, "pipefusion",
// "cfg", "data", "control"). USP's seconds include the attention compute it
// overlaps with its transfers. Plain value; one thread updates it.
struct CommStats {
  struct Entry {
    int64_t bytes_sent = 0;
    double seconds = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Entry> by_method;

  void Add(const std::string& method, int64_t bytes, double seconds) {
    Entry& e = by_method[method];
    e.bytes_sent += bytes;
    e.seconds += seconds;
    ++e.calls;
  }
};

// Adds the wall time of its scope (and the bytes given) to one method.
class CommTimer {
 public:
  CommTimer(CommStats* stats, std::string method) : stats_(stats), method_(std::move(method)) {}
  ~CommTimer() {
    if (stats_ == nullptr) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    stats_->Add(method_, bytes_, s);
  }
  void AddBytes(int64_t bytes) { bytes_ += bytes; }
  CommTimer(const CommTimer&) = delete;
  CommTimer& operator=(const CommTimer&) = delete;

 private:
  CommStats* stats_;
  std::string method_;
  int64_t bytes_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace ditserve::worker::pipelines
