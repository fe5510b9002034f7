#include "tools/train/phase_runner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "tools/train/progress.h"

namespace ditserve::tools::train {

double ScheduledLearningRate(const PhasePlan& plan, int step, int total) {
  const int warmup = std::min(plan.warmup_steps, total / 5);
  if (warmup > 0 && step <= warmup) return plan.peak_lr * step / warmup;
  const int span = std::max(1, total - warmup);
  const double progress = std::clamp(static_cast<double>(step - warmup) / span, 0.0, 1.0);
  return plan.peak_lr * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * progress)));
}

absl::StatusOr<PhaseReport> RunPhase(const PhasePlan& plan,
                                     const std::function<absl::StatusOr<double>(int, int, double)>& step,
                                     std::FILE* out) {
  // With a budget, `steps` is the provisional total until calibrated.
  int total = std::max(plan.budget_seconds > 0 ? kCalibrationSteps : 1, plan.steps);
  PhaseProgress progress(plan.name, total, plan.log_every, out);
  PhaseReport report;
  report.name = plan.name;
  for (int i = 1; i <= total; ++i) {
    auto loss = step(i, total, ScheduledLearningRate(plan, i, total));
    if (!loss.ok()) return loss.status();
    if (!std::isfinite(*loss)) {
      return absl::InternalError(absl::StrCat(plan.name, ": loss is not finite at step ", i));
    }
    if (plan.budget_seconds > 0 && i == kCalibrationSteps) {
      const double per_step = progress.Elapsed() / i;
      total = std::max(kCalibrationSteps, static_cast<int>(plan.budget_seconds / per_step));
      std::fprintf(out, "[%s] %.3f s per step: %d steps fit %s\n", plan.name.c_str(), per_step, total,
                   FormatDuration(plan.budget_seconds).c_str());
      progress.SetTotal(total);
    }
    progress.Step(i, *loss, ScheduledLearningRate(plan, i, total));
  }
  report.steps = total;
  report.seconds = progress.Elapsed();
  report.first_loss = progress.first_loss();
  report.last_loss = progress.last_loss();
  return report;
}

}  // namespace ditserve::tools::train
