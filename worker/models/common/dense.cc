#include "worker/models/common/dense.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/init.h>

#include <cmath>
#include <optional>
#include <vector>

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

namespace {

// LibTorch's oneDNN linear with a fused post-op,
// mkldnn::_linear_pointwise(Tensor X, Tensor W, Tensor? B, str attr,
// Scalar?[] scalars, str? algorithm) -> Tensor, when it serves `x` times
// `weight`: CPU float32 without autograd, in a build that has it.
std::optional<c10::OperatorHandle> FusedLinearOpFor(const at::Tensor& x, const at::Tensor& weight) {
  if (!x.is_cpu() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat ||
      at::GradMode::is_enabled() || !at::hasMKLDNN() || !at::globalContext().userEnabledMkldnn()) {
    return std::nullopt;
  }
  return c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
}

}  // namespace

bool Dense::FusesGeluTanh(const at::Tensor& x) const { return FusedLinearOpFor(x, weight).has_value(); }

at::Tensor Dense::ForwardGeluTanh(const at::Tensor& x) const {
  const std::optional<c10::OperatorHandle> fused = FusedLinearOpFor(x, weight);
  if (!fused) return at::gelu(forward(x), "tanh");
  const auto op = fused->typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                          c10::string_view, c10::List<std::optional<at::Scalar>>,
                                          std::optional<c10::string_view>)>();
  return op.call(x.contiguous(), weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, "gelu",
                 c10::List<std::optional<at::Scalar>>(), c10::string_view("tanh"));
}

at::Tensor Dense::ForwardConcat(const at::Tensor& a, const at::Tensor& b) const {
  if (a.scalar_type() != at::kFloat) return forward(at::cat({a, b}, -1));
  const int64_t ka = a.size(-1), kb = b.size(-1);
  std::vector<int64_t> sizes = a.sizes().vec();
  sizes.back() = weight.size(0);
  const at::Tensor a2 = a.reshape({-1, ka}), b2 = b.reshape({-1, kb});
  const at::Tensor wa = weight.narrow(1, 0, ka).t(), wb = weight.narrow(1, ka, kb).t();  // strided views, no copies
  at::Tensor out = bias.defined() ? at::addmm(bias, a2, wa) : at::mm(a2, wa);
  out.addmm_(b2, wb);
  return out.view(sizes);
}

}  // namespace ditserve::worker::models
