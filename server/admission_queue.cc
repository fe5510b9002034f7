#include "server/admission_queue.h"

#include "absl/strings/str_cat.h"

namespace ditserve::server {

absl::Status AdmissionQueue::Push(QueueEntry entry) {
  if (size() >= capacity_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the admission queue is full (", capacity_, " requests, --max_queue_size); retry later"));
  }
  const Key key{-entry.params.priority, sequence_++};
  keys_[entry.id] = key;
  entries_.emplace(key, std::move(entry));
  return absl::OkStatus();
}

bool AdmissionQueue::Remove(uint64_t id) {
  auto it = keys_.find(id);
  if (it == keys_.end()) return false;
  entries_.erase(it->second);
  keys_.erase(it);
  return true;
}

std::vector<QueueEntry> AdmissionQueue::TakeExpired(absl::Time now) {
  std::vector<QueueEntry> out;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.deadline <= now) {
      keys_.erase(it->second.id);
      out.push_back(std::move(it->second));
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<QueueEntry> AdmissionQueue::TakeBatch(int max_images) {
  std::vector<QueueEntry> batch;
  if (entries_.empty()) return batch;
  int images = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const bool first = batch.empty();
    if (first || (Compatible(batch.front().params, it->second.params) &&
                  images + it->second.params.num_images <= max_images)) {
      images += it->second.params.num_images;
      keys_.erase(it->second.id);
      batch.push_back(std::move(it->second));
      it = entries_.erase(it);
      if (images >= max_images) break;
    } else {
      ++it;
    }
  }
  return batch;
}

std::vector<QueueEntry> AdmissionQueue::TakeJoins(const GenerationParams& set, int room) {
  std::vector<QueueEntry> out;
  for (auto it = entries_.begin(); it != entries_.end() && room > 0;) {
    if (ShareRunningSet(set, it->second.params) && it->second.params.num_images <= room) {
      room -= it->second.params.num_images;
      keys_.erase(it->second.id);
      out.push_back(std::move(it->second));
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::optional<absl::Time> AdmissionQueue::EarliestDeadline() const {
  std::optional<absl::Time> earliest;
  for (const auto& [key, entry] : entries_) {
    if (entry.deadline != absl::InfiniteFuture() && (!earliest || entry.deadline < *earliest)) {
      earliest = entry.deadline;
    }
  }
  return earliest;
}

}  // namespace ditserve::server
