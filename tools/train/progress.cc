#include "tools/train/progress.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace ditserve::tools::train {

std::string FormatDuration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  if (s >= 3600) return absl::StrFormat("%dh%02dm%02ds", s / 3600, (s / 60) % 60, s % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

PhaseProgress::PhaseProgress(std::string phase, int total_steps, int every_steps, std::FILE* out)
    : phase_(std::move(phase)), total_(total_steps), every_(std::max(1, every_steps)), out_(out),
      start_(std::chrono::steady_clock::now()) {}

double PhaseProgress::Elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void PhaseProgress::Step(int step, double loss, double lr) {
  sum_ += loss;
  ++count_;
  if (step % every_ != 0 && step != total_) return;
  const double mean = sum_ / count_;
  if (first_loss_ < 0) first_loss_ = mean;
  last_loss_ = mean;
  sum_ = 0;
  count_ = 0;
  const double elapsed = Elapsed();
  const double eta = elapsed / step * (total_ - step);
  std::fprintf(out_, "[%s] step %d/%d  loss %.5f  lr %.1e  elapsed %s  eta %s\n", phase_.c_str(), step, total_, mean, lr,
               FormatDuration(elapsed).c_str(), FormatDuration(eta).c_str());
  std::fflush(out_);
}

}  // namespace ditserve::tools::train
