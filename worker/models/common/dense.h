#pragma once
// A fully connected layer, y = x·Wᵀ + b, registered under torch::nn::Linear's
// parameter names ("weight" [out, in], "bias" [out]), that a loader can create
// without initialising it.
//
// torch::nn::Linear always draws its initial weights (kaiming-uniform, one
// serial random draw per parameter) in float32: for a FLUX.1-dev transformer
// that is 12 B draws and 48 GB of float32 before the checkpoint overwrites
// every value. A model about to be loaded creates its layers uninitialised,
// in the run dtype, instead.

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "worker/models/common/parameter_init.h"

namespace ditserve::worker::models {

struct ParameterSpec {
  ParameterInit init = ParameterInit::kTorchDefault;
  at::ScalarType dtype = at::kFloat;  // used by kUninitialized only

  // A tensor of `sizes`: zeros or ones as asked when initialising, else
  // uninitialised in `dtype`.
  at::Tensor Filled(at::IntArrayRef sizes, double value) const;
};

class Dense : public torch::nn::Module {
 public:
  // kTorchDefault consumes the global CPU generator exactly as
  // torch::nn::Linear(in, out) does, so seeded random models are unchanged.
  Dense(int64_t in_features, int64_t out_features, const ParameterSpec& spec, bool bias = true);
  at::Tensor forward(const at::Tensor& x) const;
  // gelu(forward(x)) with the tanh approximation (Flux's and T5's MLPs). On
  // CPU in float32 without autograd it is one oneDNN call with the
  // activation fused into the matmul (LibTorch's mkldnn::_linear_pointwise;
  // the same values to float rounding, and ATen's separate tanh-GELU costs
  // as much as a fifth of the matmul); elsewhere the two ATen ops.
  at::Tensor ForwardGeluTanh(const at::Tensor& x) const;
  // True when ForwardGeluTanh(x) takes the fused path.
  bool FusesGeluTanh(const at::Tensor& x) const;
  // forward(cat({a, b}, -1)): a and b share their leading sizes and their
  // last sizes add up to in_features. In float32 the concatenation is never
  // made (the weight's two column blocks multiply a and b, accumulating into
  // one output: the same values to float rounding, one copy of both inputs
  // less); in other dtypes it is, so every product rounds once.
  at::Tensor ForwardConcat(const at::Tensor& a, const at::Tensor& b) const;

  at::Tensor weight, bias;  // bias undefined without one
};

}  // namespace ditserve::worker::models
