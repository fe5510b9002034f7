#pragma once

// A generation job's running set from --join_schedule (core/join_schedule.h):
// the SetDriver that admits, stops and collects the job's prompts at the
// steps the schedule names. Every rank derives the same answers from the
// schedule and the set's state, so it needs no communication.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/generation_plan.h"
#include "core/join_schedule.h"
#include "worker/pipelines/generation_request.h"
#include "worker/pipelines/running_set.h"

namespace ditserve::worker {

class ScheduledSet final : public pipelines::SetDriver {
 public:
  // `requests[i]` runs as scheduled by `schedule[i]` (equal sizes); its
  // step count, and its CFG scale when the schedule names one (in
  // `cfg_field`, the family's), are replaced by the schedule's. `print`:
  // rank 0 prints a line per join, leave and step.
  ScheduledSet(std::vector<pipelines::GenerationRequest> requests, std::vector<core::ScheduledJoin> schedule,
               core::CfgScaleField cfg_field, bool print);

  absl::StatusOr<pipelines::SetBoundary> Boundary(int tick, const std::vector<uint64_t>& running) override;
  void OnStep(uint64_t id, int step, int total, int running) override;
  void OnLeft(uint64_t id, absl::StatusOr<pipelines::GenerationResult> result,
              const pipelines::SetMemberTimes& times) override;

  const std::vector<pipelines::GenerationRequest>& requests() const { return requests_; }
  // Per request, once the set drained: its result (CANCELLED when the
  // schedule stopped it).
  const std::vector<absl::StatusOr<pipelines::GenerationResult>>& results() const { return results_; }

 private:
  std::vector<pipelines::GenerationRequest> requests_;
  std::vector<core::ScheduledJoin> schedule_;
  bool print_;
  std::vector<bool> joined_;
  std::vector<absl::StatusOr<pipelines::GenerationResult>> results_;
};

}  // namespace ditserve::worker
