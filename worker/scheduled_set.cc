#include "worker/scheduled_set.h"

#include <algorithm>
#include <climits>
#include <cstdio>

namespace ditserve::worker {

ScheduledSet::ScheduledSet(std::vector<pipelines::GenerationRequest> requests,
                           std::vector<core::ScheduledJoin> schedule, core::CfgScaleField cfg_field, bool print)
    : requests_(std::move(requests)),
      schedule_(std::move(schedule)),
      print_(print),
      joined_(requests_.size(), false),
      results_(requests_.size(), absl::UnknownError("never ran")) {
  for (size_t i = 0; i < requests_.size(); ++i) {
    requests_[i].num_inference_steps = schedule_[i].steps;
    if (schedule_[i].cfg_scale == 0) continue;
    (cfg_field == core::CfgScaleField::kGuidanceScale ? requests_[i].guidance_scale : requests_[i].true_cfg_scale) =
        schedule_[i].cfg_scale;
  }
}

absl::StatusOr<pipelines::SetBoundary> ScheduledSet::Boundary(int tick, const std::vector<uint64_t>& running) {
  pipelines::SetBoundary b;
  for (uint64_t id : running) {
    if (schedule_[id].cancel_at >= 0 && schedule_[id].cancel_at <= tick) b.stops.push_back(id);
  }
  // Due joins; an empty set (nothing left running) skips ahead to the next
  // scheduled join instead of ending.
  int due = tick;
  if (running.size() == b.stops.size()) {
    int next = INT_MAX;
    for (size_t i = 0; i < requests_.size(); ++i) {
      if (!joined_[i]) next = std::min(next, schedule_[i].join_at);
    }
    due = std::max(due, next == INT_MAX ? tick : next);
  }
  for (size_t i = 0; i < requests_.size(); ++i) {
    if (joined_[i] || schedule_[i].join_at > due) continue;
    joined_[i] = true;
    b.joins.push_back(pipelines::SetJoin{i, requests_[i]});
    if (print_) std::printf("step %d: image %zu joins (%d steps)\n", tick, i, requests_[i].num_inference_steps);
  }
  return b;
}

void ScheduledSet::OnStep(uint64_t id, int step, int total, int running) {
  if (print_) std::printf("image %llu step %d/%d (set of %d)\n", static_cast<unsigned long long>(id), step, total, running);
}

void ScheduledSet::OnLeft(uint64_t id, absl::StatusOr<pipelines::GenerationResult> result,
                          const pipelines::SetMemberTimes& times) {
  if (print_) {
    std::printf("image %llu leaves: %s (denoising %.3f s, vae %.3f s)\n", static_cast<unsigned long long>(id),
                result.ok() ? "done" : result.status().ToString().c_str(), times.denoising_s, times.vae_s);
    std::fflush(stdout);
  }
  results_[id] = std::move(result);
}

}  // namespace ditserve::worker
