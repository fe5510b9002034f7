#pragma once

// The bounded admission queue: requests accepted but not yet given to the
// gang. Ordered by priority (higher first), FIFO within a priority. The
// batching policy (TakeBatch) is a pure function of the queue's contents.
// Not thread-safe: the dispatcher owns it under its mutex.

#include <cstdint>
#include <map>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/request.h"

namespace ditserve::server {

struct QueueEntry {
  uint64_t id = 0;
  GenerationParams params;
  absl::Time deadline = absl::InfiniteFuture();
};

class AdmissionQueue {
 public:
  // `capacity`: requests that may wait; 0 refuses everything while the
  // gang is busy (callers may still hand work straight to an idle gang).
  explicit AdmissionQueue(int capacity) : capacity_(capacity) {}

  // RESOURCE_EXHAUSTED naming --max_queue_size when full.
  absl::Status Push(QueueEntry entry);
  // Removes the request if it is queued; returns whether it was.
  bool Remove(uint64_t id);
  // Removes and returns every request whose deadline is <= now.
  std::vector<QueueEntry> TakeExpired(absl::Time now);
  // Removes and returns the next batch: the first request in order, then
  // every later request compatible with it (Compatible()) while the
  // batch's images stay within `max_images`, in queue order. The first
  // request is always taken, even when its images alone exceed
  // `max_images`. Empty when the queue is.
  std::vector<QueueEntry> TakeBatch(int max_images);
  // Removes and returns, in queue order, every request that
  // ShareRunningSet(set, ·) while their images stay within `room` (a
  // request that does not fit is skipped, a later smaller one may go).
  std::vector<QueueEntry> TakeJoins(const GenerationParams& set, int room);
  // The next request in order; null when empty.
  const QueueEntry* Head() const { return entries_.empty() ? nullptr : &entries_.begin()->second; }

  std::optional<absl::Time> EarliestDeadline() const;
  int size() const { return static_cast<int>(entries_.size()); }
  int capacity() const { return capacity_; }

 private:
  // (-priority, arrival sequence): begin() is the next to run.
  using Key = std::pair<int, uint64_t>;
  int capacity_;
  uint64_t sequence_ = 0;
  std::map<Key, QueueEntry> entries_;
  std::unordered_map<uint64_t, Key> keys_;
};

}  // namespace ditserve::server
