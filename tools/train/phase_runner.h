#pragma once

// Runs one training phase: a fixed number of optimiser steps (or as many as
// fit a time budget), a learning-rate schedule (linear warm-up, then cosine
// decay to 10% of the peak) and progress lines.

#include <cstdio>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace ditserve::tools::train {

struct PhasePlan {
  std::string name;
  int steps = 1000;
  // > 0: the first kCalibrationSteps steps are timed (with the schedule of
  // `steps`) and the phase gets as many steps as fit this many seconds in
  // all (at least kCalibrationSteps).
  double budget_seconds = 0;
  double peak_lr = 1e-3;
  int warmup_steps = 100;
  int log_every = 50;
};

struct PhaseReport {
  std::string name;
  int steps = 0;
  double seconds = 0;
  double first_loss = 0;  // mean over the first reporting interval
  double last_loss = 0;   // mean over the last reporting interval
};

inline constexpr int kCalibrationSteps = 8;

// The learning rate at 1-based `step` of `total`: linear warm-up over
// min(warmup_steps, total / 5) steps, then cosine decay to 10% of the peak.
double ScheduledLearningRate(const PhasePlan& plan, int step, int total);

// Calls step(step, total, lr) -> loss for step = 1..total and reports; the
// first error from `step` ends the phase and is returned.
absl::StatusOr<PhaseReport> RunPhase(const PhasePlan& plan,
                                     const std::function<absl::StatusOr<double>(int step, int total, double lr)>& step,
                                     std::FILE* out);

}  // namespace ditserve::tools::train
