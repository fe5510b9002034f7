// models::Dense against torch::nn::Linear: the same parameters from the same
// seed, the same output; uninitialised layers draw nothing.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/modules/linear.h>

#include "worker/models/common/dense.h"

namespace ditserve::worker::models {
namespace {

TEST(Dense, InitialisesLikeTorchLinear) {
  for (bool bias : {true, false}) {
    at::manual_seed(3);
    torch::nn::Linear want(torch::nn::LinearOptions(37, 11).bias(bias));
    at::manual_seed(3);
    Dense got(37, 11, ParameterSpec{}, bias);
    EXPECT_TRUE(at::equal(got.weight, want->weight)) << "bias " << bias;
    EXPECT_EQ(got.bias.defined(), bias);
    if (bias) {
      EXPECT_TRUE(at::equal(got.bias, want->bias));
    }
    EXPECT_EQ(got.named_parameters().size(), bias ? 2u : 1u);
    const at::Tensor x = at::randn({2, 5, 37});
    EXPECT_TRUE(at::allclose(got.forward(x), want->forward(x)));
    EXPECT_EQ(got.weight.scalar_type(), at::kFloat);
    EXPECT_TRUE(got.weight.requires_grad());
  }
}

TEST(Dense, UninitialisedLayersDrawNothing) {
  at::manual_seed(5);
  const at::Tensor expected_next = at::rand({4});
  at::manual_seed(5);
  Dense layer(64, 32, ParameterSpec{ParameterInit::kUninitialized, at::kBFloat16});
  EXPECT_TRUE(at::equal(at::rand({4}), expected_next));  // the generator was not used
  EXPECT_EQ(layer.weight.scalar_type(), at::kBFloat16);
  EXPECT_EQ(layer.bias.scalar_type(), at::kBFloat16);
  EXPECT_EQ(layer.weight.sizes(), (std::vector<int64_t>{32, 64}));
  const ParameterSpec spec{ParameterInit::kUninitialized, at::kHalf};
  EXPECT_EQ(spec.Filled({3}, 1.0).scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(ParameterSpec{}.Filled({3}, 1.0), at::ones({3})));
}

// The fused CPU path (one oneDNN call) gives ATen's two ops to float
// rounding, with and without bias, on 2-D, 3-D and strided inputs; under
// autograd (training) the ATen ops run.
TEST(Dense, GeluTanhFusedEqualsTheTwoOps) {
  at::manual_seed(7);
  for (bool bias : {true, false}) {
    Dense layer(64, 256, ParameterSpec{}, bias);
    at::NoGradGuard no_grad;
    const at::Tensor wide = at::randn({3, 40, 128});
    for (const at::Tensor& x : {at::randn({40, 64}), at::randn({2, 40, 64}), wide.narrow(2, 32, 64)}) {
      EXPECT_TRUE(layer.FusesGeluTanh(x)) << "this LibTorch has no mkldnn::_linear_pointwise";
      const at::Tensor want = at::gelu(at::linear(x, layer.weight, layer.bias), "tanh");
      const at::Tensor got = layer.ForwardGeluTanh(x);
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_LT((got - want).abs().max().item<double>(), 1e-5) << "bias " << bias << " x " << x.sizes();
    }
  }
  Dense layer(8, 16, ParameterSpec{});
  const at::Tensor x = at::randn({4, 8});
  EXPECT_FALSE(layer.FusesGeluTanh(x)) << "under autograd";
  EXPECT_TRUE(layer.ForwardGeluTanh(x).requires_grad());
  at::NoGradGuard no_grad;
  EXPECT_FALSE(layer.FusesGeluTanh(x.to(at::kDouble)));
  EXPECT_TRUE(at::allclose(layer.ForwardGeluTanh(x), at::gelu(layer.forward(x), "tanh")));
}

// Multiplying the weight's column blocks equals multiplying the
// concatenation, in float32 (split) and bfloat16 (concatenated), with and
// without bias, and gradients flow through the split (training uses it).
TEST(Dense, ForwardConcatEqualsTheConcatenation) {
  at::manual_seed(9);
  for (bool bias : {true, false}) {
    Dense layer(48 + 80, 32, ParameterSpec{}, bias);
    const at::Tensor a = at::randn({2, 7, 48}).requires_grad_();
    const at::Tensor b = at::randn({2, 7, 80}).requires_grad_();
    const at::Tensor want = layer.forward(at::cat({a, b}, -1));
    const at::Tensor got = layer.ForwardConcat(a, b);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-5) << "bias " << bias;
    const auto grad_want = torch::autograd::grad({want.sum()}, {a, b, layer.weight});
    const auto grad_got = torch::autograd::grad({got.sum()}, {a, b, layer.weight});
    for (size_t i = 0; i < grad_want.size(); ++i) {
      EXPECT_LT((grad_got[i] - grad_want[i]).abs().max().item<double>(), 1e-4) << "gradient " << i;
    }
    at::NoGradGuard no_grad;
    const at::Tensor a16 = a.to(at::kBFloat16), b16 = b.to(at::kBFloat16);
    Dense half(48 + 80, 32, ParameterSpec{ParameterInit::kUninitialized, at::kBFloat16}, bias);
    half.weight.copy_(layer.weight);
    if (bias) half.bias.copy_(layer.bias);
    EXPECT_TRUE(at::equal(half.ForwardConcat(a16, b16), half.forward(at::cat({a16, b16}, -1))));
  }
}

}  // namespace
}  // namespace ditserve::worker::models
