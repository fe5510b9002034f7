#pragma once

// An exponential moving average of a model's weights, kept in float32
// beside the live parameters: shadow = decay·shadow + (1 - decay)·param,
// with the usual warm-up decay min(decay, (1 + n) / (10 + n)) after n
// updates, so early weights are forgotten quickly.

#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace ditserve::tools::train {

class Ema {
 public:
  // Copies the current values of `params` (which must stay alive and keep
  // their shapes while Update is called).
  Ema(std::vector<std::pair<std::string, at::Tensor>> params, double decay);

  void Update();
  // The averaged weights, with the live parameters' names.
  std::vector<std::pair<std::string, at::Tensor>> Averaged() const;

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<at::Tensor> shadow_;
  double decay_;
  int64_t updates_ = 0;
};

}  // namespace ditserve::tools::train
