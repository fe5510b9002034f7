#include "worker/models/common/dense.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>

namespace ditserve::worker::models {

at::Tensor ParameterSpec::Filled(at::IntArrayRef sizes, double value) const {
  if (init == ParameterInit::kUninitialized) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  return at::full(sizes, value, at::kFloat);
}

Dense::Dense(int64_t in_features, int64_t out_features, const ParameterSpec& spec, bool with_bias) {
  const bool initialise = spec.init == ParameterInit::kTorchDefault;
  const at::TensorOptions options = at::TensorOptions().dtype(initialise ? at::kFloat : spec.dtype);
  weight = register_parameter("weight", at::empty({out_features, in_features}, options));
  if (with_bias) bias = register_parameter("bias", at::empty({out_features}, options));
  if (!initialise) return;
  // torch::nn::LinearImpl::reset_parameters: kaiming_uniform_(a = sqrt(5)),
  // then the bias uniform in ±1/sqrt(fan_in).
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

at::Tensor Dense::forward(const at::Tensor& x) const { return at::linear(x, weight, bias); }

}  // namespace ditserve::worker::models
