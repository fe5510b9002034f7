#include "worker/models/common/embedding.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

namespace ditserve::worker::models {

Embedding::Embedding(int64_t num_embeddings, int64_t dim, const ParameterSpec& spec) {
  const bool initialise = spec.init == ParameterInit::kTorchDefault;
  weight = register_parameter(
      "weight", at::empty({num_embeddings, dim}, at::TensorOptions().dtype(initialise ? at::kFloat : spec.dtype)));
  if (initialise) torch::nn::init::normal_(weight);
}

at::Tensor Embedding::forward(const at::Tensor& ids) const { return at::embedding(weight, ids); }

}  // namespace ditserve::worker::models
