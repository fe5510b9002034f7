#pragma once

// Rank 0's text encoding for the joiners of a running set, on a thread of
// its own: the set keeps stepping while a joiner's prompt is encoded, and
// the joiner is admitted at the first step boundary after its encoding is
// done (docs/continuous-batching.md). Internal to worker/pipelines.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "worker/families/text_conditioner.h"

namespace ditserve::worker::pipelines {

// One joiner's encoded texts, in the order submitted (its prompt, then
// under CFG its negative prompt), or the error of the first that failed.
struct EncodedJoin {
  absl::Status status;
  std::vector<families::TextEmbeddings> texts;
  double seconds = 0;  // the encoder thread's wall time for this joiner
};

// Thread: every method is called from one thread (the one running the set);
// the encoding itself runs on the encoder's own thread, one joiner at a time
// in submission order. `text` must outlive the encoder and is used only by
// the encoder's thread while the encoder lives (TextConditioner::Encode is
// thread-compatible: nothing else may encode meanwhile).
class JoinEncoder {
 public:
  // `threads`: the intra-op threads the encoding thread may use (the gang's
  // --threads).
  JoinEncoder(const families::TextConditioner& text, c10::Device device, int threads);
  // Finishes the encoding in progress, drops the rest and joins the thread.
  ~JoinEncoder();
  JoinEncoder(const JoinEncoder&) = delete;
  JoinEncoder& operator=(const JoinEncoder&) = delete;

  // Queues joiner `id`'s texts, each encoded at `max_sequence_length`.
  void Submit(uint64_t id, std::vector<std::string> texts, int max_sequence_length);
  // Whether `id`'s encoding is done (successfully or not).
  bool Ready(uint64_t id) const;
  // Waits until `id`'s encoding is done and returns it (then forgets it).
  // `id` must have been submitted and not dropped or taken.
  EncodedJoin Take(uint64_t id);
  // Blocks until `id` is Ready.
  void Wait(uint64_t id);
  // Forgets `id`: queued, it is not encoded; in progress, its result is
  // discarded; done, its result is freed.
  void Drop(uint64_t id);

 private:
  struct Job {
    uint64_t id = 0;
    std::vector<std::string> texts;
    int max_sequence_length = 0;
  };
  void Loop();

  const families::TextConditioner& text_;
  const c10::Device device_;
  const int threads_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Job> queue_;             // guarded by mu_
  uint64_t running_ = 0;              // the id being encoded (valid when busy_)
  bool busy_ = false;                 // guarded by mu_
  std::set<uint64_t> discard_;        // in progress, then dropped; guarded by mu_
  std::map<uint64_t, EncodedJoin> done_;  // guarded by mu_
  bool stop_ = false;                 // guarded by mu_
  std::thread thread_;                // last: starts after the members above
};

}  // namespace ditserve::worker::pipelines
