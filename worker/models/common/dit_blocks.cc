#include "worker/models/common/dit_blocks.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ditserve::worker::models {

at::Tensor LayerNormNoAffine(const at::Tensor& x) { return at::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6); }

at::Tensor Modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return LayerNormNoAffine(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}

at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  std::vector<int64_t> pairs = x.sizes().vec();
  if (x.scalar_type() == at::kFloat && cos.scalar_type() == at::kFloat) {
    const int64_t D = pairs.back();
    pairs.back() = D / 2;
    pairs.push_back(2);
    const at::Tensor turn =
        at::complex(cos.slice(-1, 0, D, 2), sin.slice(-1, 0, D, 2)).unsqueeze(0).unsqueeze(2);  // [1, S, 1, D/2]
    return at::view_as_real(at::view_as_complex(x.contiguous().view(pairs)) * turn).flatten(3);
  }
  pairs.back() /= 2;
  pairs.push_back(2);
  const at::Tensor xp = x.reshape(pairs);
  const at::Tensor real = xp.select(-1, 0), imag = xp.select(-1, 1);
  const at::Tensor rotated = at::stack({-imag, real}, -1).flatten(3);
  const at::Tensor c = cos.unsqueeze(0).unsqueeze(2), s = sin.unsqueeze(0).unsqueeze(2);
  return (x.to(at::kFloat) * c + rotated.to(at::kFloat) * s).to(x.scalar_type());
}

at::Tensor ClampHalf(const at::Tensor& x) { return x.scalar_type() == at::kHalf ? x.clamp(-65504, 65504) : x; }

absl::StatusOr<DitPart> ResolvePart(const char* family, DitPart part, int num_blocks) {
  if (part.end_block < 0) part.end_block = num_blocks;
  if (part.first_block < 0 || part.end_block > num_blocks || part.first_block > part.end_block) {
    return absl::InvalidArgumentError(absl::StrCat(family, ": blocks [", part.first_block, ", ", part.end_block,
                                                   ") are outside the model's ", num_blocks, " blocks"));
  }
  return part;
}

absl::StatusOr<int> HeldSpanEnd(const char* family, const DitConditioning& conditioning, int held,
                                DitTransformer::BlockSpan span) {
  if (conditioning.blocks.size() != static_cast<size_t>(held) ||
      conditioning.blocks_context.size() != static_cast<size_t>(held)) {
    return absl::InvalidArgumentError(absl::StrCat(family, ": the conditioning covers ", conditioning.blocks.size(),
                                                   " blocks; this part holds ", held,
                                                   " (it must come from this model's Condition)"));
  }
  const int end = span.end < 0 ? held : span.end;
  if (span.begin < 0 || span.begin > end || end > held) {
    return absl::InvalidArgumentError(
        absl::StrCat(family, ": blocks [", span.begin, ", ", end, ") are outside the ", held, " held"));
  }
  return end;
}

at::Tensor TimestepSinusoid256(const at::Tensor& timesteps) {
  constexpr int kHalf = 128;
  const at::Tensor exponent =
      at::arange(0, kHalf, timesteps.options().dtype(at::kFloat)) * (-std::log(10000.0) / kHalf);
  const at::Tensor args = timesteps.to(at::kFloat).unsqueeze(1) * exponent.exp().unsqueeze(0);
  return at::cat({args.cos(), args.sin()}, -1);
}

PatchProj::PatchProj(int64_t in_channels, int64_t dim, const ParameterSpec& p) {
  const bool initialise = p.init == ParameterInit::kTorchDefault;
  const at::TensorOptions options = at::TensorOptions().dtype(initialise ? at::kFloat : p.dtype);
  weight = register_parameter("weight", at::empty({dim, in_channels, 2, 2}, options));
  bias = register_parameter("bias", at::empty({dim}, options));
  if (!initialise) return;
  // torch::nn::Conv2dImpl::reset_parameters: kaiming_uniform_(a = sqrt(5))
  // (fan_in = C·2·2), then the bias uniform in ±1/sqrt(fan_in).
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_channels * 4));
  torch::nn::init::uniform_(bias, -bound, bound);
}

at::Tensor PatchProj::forward(const at::Tensor& tokens) const {
  return at::linear(tokens, weight.reshape({weight.size(0), -1}), bias);
}

RmsNorm::RmsNorm(int64_t dim, const ParameterSpec& p) { weight = register_parameter("weight", p.Filled({dim}, 1.0)); }

at::Tensor RmsNorm::forward(const at::Tensor& x) const {
  const at::Tensor var = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor y = x * at::rsqrt(var + 1e-6);
  if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16) y = y.to(weight.scalar_type());
  return y * weight;
}

TwoLayer::TwoLayer(int64_t in, int64_t out, const ParameterSpec& p) {
  linear_1 = register_module("linear_1", std::make_shared<Dense>(in, out, p));
  linear_2 = register_module("linear_2", std::make_shared<Dense>(out, out, p));
}

at::Tensor TwoLayer::forward(const at::Tensor& x) { return linear_2->forward(at::silu(linear_1->forward(x))); }

AdaNorm::AdaNorm(int64_t dim, int chunks, const ParameterSpec& p) {
  linear = register_module("linear", std::make_shared<Dense>(dim, chunks * dim, p));
}

at::Tensor AdaNorm::Modulation(const at::Tensor& temb) { return linear->forward(at::silu(temb)); }

FeedForward::FeedForward(int64_t dim, const ParameterSpec& p, int64_t inner) {
  if (inner == 0) inner = 4 * dim;
  net = register_module("net", torch::nn::ModuleList());
  auto gelu = std::make_shared<Empty>();
  proj = gelu->register_module("proj", std::make_shared<Dense>(dim, inner, p));
  net->push_back(gelu);
  net->push_back(std::make_shared<Empty>());  // dropout
  out = std::make_shared<Dense>(inner, dim, p);
  net->push_back(out);
}

at::Tensor FeedForward::forward(const at::Tensor& x) { return out->forward(proj->ForwardGeluTanh(x)); }

}  // namespace ditserve::worker::models
