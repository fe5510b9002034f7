#include "tools/train/ema.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

namespace ditserve::tools::train {

Ema::Ema(std::vector<std::pair<std::string, at::Tensor>> params, double decay)
    : params_(std::move(params)), decay_(decay) {
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : params_) shadow_.push_back(p.detach().to(at::kFloat).clone());
}

void Ema::Update() {
  at::NoGradGuard no_grad;
  const double d = std::min(decay_, (1.0 + updates_) / (10.0 + updates_));
  ++updates_;
  for (size_t i = 0; i < params_.size(); ++i) shadow_[i].mul_(d).add_(params_[i].second.detach().to(at::kFloat), 1 - d);
}

std::vector<std::pair<std::string, at::Tensor>> Ema::Averaged() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) out.push_back({params_[i].first, shadow_[i]});
  return out;
}

}  // namespace ditserve::tools::train
