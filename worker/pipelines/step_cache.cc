#include "worker/pipelines/step_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <utility>

namespace ditserve::worker::pipelines {

StepCache::StepCache(std::vector<core::StepCacheOptions> options, int steps, int branches, int64_t padded_tokens,
                     int64_t real_tokens, core::TeaCachePolynomial teacache, c10::Device device)
    : branches_(branches), padded_tokens_(padded_tokens), real_tokens_(real_tokens), device_(device) {
  for (const core::StepCacheOptions& o : options) {
    if (o.method != core::StepCacheMethod::kNone) method_ = o.method;
    rules_.emplace_back(o, steps, teacache);
  }
  decisions_.resize(rules_.size());
  sums_ = at::zeros({2, static_cast<int64_t>(rules_.size())}, at::kDouble);
}

void StepCache::BeginStep() {
  sums_.zero_();
  local_.clear();
}

void StepCache::Store(at::Tensor& state, const at::Tensor& value, int64_t begin) const {
  if (!state.defined()) state = at::zeros({value.size(0), padded_tokens_, value.size(2)}, value.options());
  state.narrow(1, begin, value.size(1)).copy_(value);
}

void StepCache::AddSignal(const at::Tensor& signal, const at::Tensor& anchor, int64_t begin) {
  const int64_t length = signal.size(1);
  const int64_t valid = std::clamp<int64_t>(real_tokens_ - begin, 0, length);
  if (signal_ref_.defined() && valid > 0) {
    const int64_t n = static_cast<int64_t>(rules_.size());
    const at::Tensor previous = signal_ref_.narrow(1, begin, valid);
    const at::Tensor now = signal.narrow(1, 0, valid);
    const auto per_request = [&](const at::Tensor& t) {
      return t.abs().sum({1, 2}, false, at::kDouble).cpu().view({branches_, n}).sum(0);
    };
    sums_[0] += per_request(now - previous);
    sums_[1] += per_request(previous);
  }
  Store(signal_now_, signal, begin);
  Store(anchor_now_, anchor, begin);
}

at::Tensor StepCache::Decide(int step) {
  const int64_t n = static_cast<int64_t>(rules_.size());
  at::Tensor computes = at::zeros({n}, at::kInt);
  local_.assign(rules_.size(), 0);
  for (int64_t j = 0; j < n; ++j) {
    const double distance = sums_[0][j].item<double>() / sums_[1][j].item<double>();
    local_[j] = rules_[j].Decide(step, distance) ? 1 : 0;
    computes[j] = local_[j];
  }
  return computes;
}

void StepCache::Agree(int /*step*/, const at::Tensor& computes) {
  const at::Tensor flags = computes.to(at::kInt).cpu();
  const int64_t n = static_cast<int64_t>(rules_.size());
  computes_.assign(rules_.size(), false);
  computing_rows_.clear();
  std::vector<uint8_t> rows(static_cast<size_t>(branches_ * n), 0);
  for (int64_t j = 0; j < n; ++j) {
    computes_[j] = flags[j].item<int>() != 0;
    if (!local_.empty() && (local_[j] != 0) != computes_[j]) rules_[j].Overrule(computes_[j]);
    decisions_[j].push_back(computes_[j]);
  }
  for (int b = 0; b < branches_; ++b) {
    for (int64_t j = 0; j < n; ++j) {
      if (computes_[j]) {
        computing_rows_.push_back(b * n + j);
        rows[b * n + j] = 1;
      }
    }
  }
  any_ = !computing_rows_.empty();
  all_ = static_cast<int64_t>(computing_rows_.size()) == branches_ * n;
  row_mask_ = at::tensor(std::vector<int64_t>(rows.begin(), rows.end()), at::kLong).to(at::kBool).to(device_);
  computing_index_ = at::tensor(computing_rows_, at::kLong).to(device_);
}

at::Tensor StepCache::AnchorDelta(int64_t begin, int64_t length) const {
  return anchor_now_.narrow(1, begin, length) - anchor_ref_.narrow(1, begin, length);
}

void StepCache::CopyComputingRows(at::Tensor& to, const at::Tensor& from) const {
  to.index_copy_(0, computing_index_, from.index_select(0, computing_index_));
}

void StepCache::CommitStage0() {
  // The "now" tensors are rewritten in this rank's ranges next step, so a
  // swap hands the reference over without a copy.
  const auto commit = [&](at::Tensor& reference, at::Tensor& now, bool every_row) {
    if (every_row || !reference.defined()) {
      std::swap(reference, now);
    } else if (any_) {
      CopyComputingRows(reference, now);
    }
  };
  commit(signal_ref_, signal_now_, all_ || method_ == core::StepCacheMethod::kTeaCache);
  commit(anchor_ref_, anchor_now_, all_);
}

at::Tensor StepCache::Merge(const at::Tensor& computed, const at::Tensor& delta, int64_t begin, int64_t length) {
  if (all_) {
    Store(output_ref_, computed, begin);
    return computed;
  }
  const at::Tensor cached = output_ref_.narrow(1, begin, length) + delta;
  if (!any_) return cached;
  const at::Tensor merged = at::where(row_mask_.view({-1, 1, 1}), computed, cached);
  output_ref_.narrow(1, begin, length).index_copy_(0, computing_index_, computed.index_select(0, computing_index_));
  return merged;
}

}  // namespace ditserve::worker::pipelines
