#pragma once
// A lookup table, registered under torch::nn::Embedding's parameter name
// ("weight" [num_embeddings, dim]), that a loader can create without
// initialising it (see dense.h for why).

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "worker/models/common/dense.h"

namespace ditserve::worker::models {

class Embedding : public torch::nn::Module {
 public:
  // kTorchDefault draws N(0, 1) from the global CPU generator, as
  // torch::nn::Embedding(num_embeddings, dim) does.
  Embedding(int64_t num_embeddings, int64_t dim, const ParameterSpec& spec);
  // Rows of `ids` (any integer shape): [..., dim].
  at::Tensor forward(const at::Tensor& ids) const;

  at::Tensor weight;
};

}  // namespace ditserve::worker::models
