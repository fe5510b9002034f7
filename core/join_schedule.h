#pragma once

// A generation job's scripted running set (--join_schedule): when each
// prompt joins the set, how many steps it runs, and when (if ever) it is
// cancelled. The flag is one entry per prompt, comma-separated:
//   JOIN[:STEPS[:CANCEL[:CFG]]]
// JOIN: the set's step boundary at which the prompt joins (0: before the
// first step); STEPS: its num_inference_steps (absent or 0: the job's
// --num_inference_steps); CANCEL: the boundary at which it is stopped,
// after JOIN (absent or empty: never); CFG: its classifier-free guidance
// scale, >= 1 (1: none), in the family's CFG field (--true_cfg_scale for
// Flux, --guidance_scale for the others; absent: the job's), so that
// requests with and without CFG share the set. A prompt joins at the first boundary at or
// after JOIN that the set reaches (an empty set runs no steps, so
// boundaries skip ahead to the next join). Torch-free.

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ditserve::core {

struct ScheduledJoin {
  int join_at = 0;
  int steps = 0;
  int cancel_at = -1;  // -1: never
  double cfg_scale = 0;  // 0: the job's
};

// One entry per prompt; INVALID_ARGUMENT naming --join_schedule, the entry
// and the rule when `text` has another count of entries than `prompts`, a
// field that is not a non-negative integer, STEPS outside [1, 1000], a
// CANCEL not after JOIN or a CFG that is not a number >= 1. Empty text: an empty schedule.
absl::StatusOr<std::vector<ScheduledJoin>> ParseJoinSchedule(const std::string& text, int prompts, int default_steps);

}  // namespace ditserve::core
