#include "worker/pipelines/join_encoder.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <chrono>
#include <utility>

namespace ditserve::worker::pipelines {

JoinEncoder::JoinEncoder(const families::TextConditioner& text, c10::Device device, int threads)
    : text_(text), device_(device), threads_(std::max(1, threads)), thread_([this] { Loop(); }) {}

JoinEncoder::~JoinEncoder() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    queue_.clear();
  }
  changed_.notify_all();
  thread_.join();
}

void JoinEncoder::Submit(uint64_t id, std::vector<std::string> texts, int max_sequence_length) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(Job{id, std::move(texts), max_sequence_length});
  }
  changed_.notify_all();
}

bool JoinEncoder::Ready(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_.count(id) > 0;
}

void JoinEncoder::Wait(uint64_t id) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return done_.count(id) > 0; });
}

EncodedJoin JoinEncoder::Take(uint64_t id) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return done_.count(id) > 0; });
  EncodedJoin out = std::move(done_.at(id));
  done_.erase(id);
  return out;
}

void JoinEncoder::Drop(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [&](const Job& j) { return j.id == id; }), queue_.end());
  if (busy_ && running_ == id) discard_.insert(id);
  done_.erase(id);
}

void JoinEncoder::Loop() {
  // This thread's own ATen state: no autograd, the gang's device and its
  // intra-op thread count (a new thread does not inherit set_num_threads).
  at::NoGradGuard no_grad;
  c10::OptionalDeviceGuard device_guard;
  if (!device_.is_cpu()) device_guard.reset_device(device_);
  at::set_num_threads(threads_);
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      running_ = job.id;
      busy_ = true;
    }
    const auto start = std::chrono::steady_clock::now();
    EncodedJoin result;
    for (const std::string& t : job.texts) {
      auto e = text_.Encode(t, job.max_sequence_length);
      if (!e.ok()) {
        result.status = e.status();
        result.texts.clear();
        break;
      }
      result.texts.push_back(*std::move(e));
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
      if (discard_.erase(job.id) == 0) done_[job.id] = std::move(result);
    }
    changed_.notify_all();
  }
}

}  // namespace ditserve::worker::pipelines
