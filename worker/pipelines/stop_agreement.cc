#include "worker/pipelines/stop_agreement.h"

#include <ATen/ATen.h>

namespace ditserve::worker::pipelines {

StopAgreement::StopAgreement(parallel::Communicator& control) : control_(control), thread_([this] { Loop(); }) {}

StopAgreement::~StopAgreement() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StopAgreement::Post(bool want_stop) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    votes_.push_back(want_stop);
  }
  ++posted_;
  cv_.notify_all();
}

absl::StatusOr<bool> StopAgreement::Decision(int index) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return static_cast<int>(decided_.size()) > index; });
  return decided_[index];
}

void StopAgreement::Loop() {
  bool failed = false;
  while (true) {
    bool vote = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !votes_.empty() || closing_; });
      if (votes_.empty()) return;  // closing with nothing left to agree on
      vote = votes_.front();
      votes_.pop_front();
    }
    absl::StatusOr<bool> result = absl::UnavailableError("an earlier stop agreement failed");
    if (!failed) {
      at::Tensor flag = at::full({1}, vote ? 1 : 0, at::kInt);
      absl::Status s = control_.AllReduce(flag, parallel::ReduceOp::kMax);
      if (s.ok()) {
        result = flag.item<int>() != 0;
      } else {
        result = s;
        failed = true;
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      decided_.push_back(result);
    }
    cv_.notify_all();
  }
}

}  // namespace ditserve::worker::pipelines
