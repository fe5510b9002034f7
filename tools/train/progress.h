#pragma once

// Progress lines of a training run, one per reporting interval:
//   [transformer-64] step 400/3000  loss 0.3121  lr 8.0e-04  elapsed 2m05s  eta 13m32s
// The loss shown is the mean since the previous line. Torch-free; not
// thread-safe (one training loop owns it).

#include <chrono>
#include <cstdio>
#include <string>

namespace ditserve::tools::train {

// "1h02m03s", "2m05s" or "7s".
std::string FormatDuration(double seconds);

class PhaseProgress {
 public:
  // Prints to `out` (not owned) every `every_steps` steps, and at the last step.
  PhaseProgress(std::string phase, int total_steps, int every_steps, std::FILE* out);

  // Records step `step` (1-based) with its loss and learning rate; prints
  // when the interval is due.
  void Step(int step, double loss, double lr);

  // Changes the planned number of steps (after a calibration).
  void SetTotal(int total_steps) { total_ = total_steps; }
  // Seconds since construction.
  double Elapsed() const;
  // Mean loss of the first and of the last reported interval (for the
  // summary and for the smoke test's "loss goes down").
  double first_loss() const { return first_loss_; }
  double last_loss() const { return last_loss_; }

 private:
  std::string phase_;
  int total_;
  int every_;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_;
  double sum_ = 0;
  int count_ = 0;
  double first_loss_ = -1, last_loss_ = -1;
};

}  // namespace ditserve::tools::train
