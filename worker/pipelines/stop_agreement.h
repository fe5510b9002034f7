#pragma once

// Agreement on stopping a generation, without stalling a pipeline: after
// each step every rank posts whether it wants to stop (its on_step said
// so), and a background thread all-reduces the posts over the control group
// in order. A rank reads decision #j later, when it needs it, so ranks at
// different pipeline positions never wait for each other on this.

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace ditserve::worker::pipelines {

// Owns its thread; the control communicator must outlive it and must not
// be used by anyone else while it exists. Post and Decision are called from
// one thread.
class StopAgreement {
 public:
  explicit StopAgreement(parallel::Communicator& control);
  ~StopAgreement();  // finishes the posted agreements, then joins
  StopAgreement(const StopAgreement&) = delete;
  StopAgreement& operator=(const StopAgreement&) = delete;

  // Posts this rank's vote for agreement #posted() (every rank posts the
  // same number of votes).
  void Post(bool want_stop);
  int posted() const { return posted_; }
  // Blocks until agreement #index (< posted()) is known: true when any rank
  // voted to stop; an error when the all-reduce failed.
  absl::StatusOr<bool> Decision(int index);

 private:
  void Loop();

  parallel::Communicator& control_;
  int posted_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<bool> votes_;                    // guarded by mu_
  std::vector<absl::StatusOr<bool>> decided_;  // guarded by mu_
  bool closing_ = false;                       // guarded by mu_
  std::thread thread_;
};

}  // namespace ditserve::worker::pipelines
