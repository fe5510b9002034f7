#pragma once

// Building blocks shared by the AutoencoderKL encoder and decoder, with
// diffusers' submodule names (norm1, conv1, …, group_norm, to_q, …), so a
// block registered under its checkpoint prefix loads by name. Internal to
// worker/models/vae (this header pulls in torch::nn).

#include <memory>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "absl/status/statusor.h"

namespace ditserve::worker::vae {

// GroupNorm with the VAE's eps (1e-6).
torch::nn::GroupNorm VaeNorm(int groups, int channels);
// k×k convolution, stride 1, "same" padding.
torch::nn::Conv2d VaeConv(int in, int out, int k);

// A module whose only content is named submodules (down_blocks.N, mid_block).
struct VaeContainer : torch::nn::Module {};

// ResnetBlock2D without time embedding: norm1 → SiLU → conv1 → norm2 → SiLU
// → conv2, plus the input (through conv_shortcut when channels change).
struct VaeResnet : torch::nn::Module {
  VaeResnet(int in, int out, int groups);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};

// The mid block's single-head self-attention over all pixels, with the
// residual. Differentiable (LibTorch ops) when grad mode is on.
struct VaeSpatialAttention : torch::nn::Module {
  VaeSpatialAttention(int channels, int groups);
  absl::StatusOr<at::Tensor> forward(const at::Tensor& x);
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out{nullptr};
  torch::nn::ModuleList to_out{nullptr};
};

// UNetMidBlock2D: resnets.0 → attentions.0 (if present) → resnets.1.
struct VaeMidBlock : torch::nn::Module {
  VaeMidBlock(int channels, int groups, bool attention);
  absl::StatusOr<at::Tensor> forward(const at::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};

// Upsample2D: nearest ×2, then a 3×3 conv.
struct VaeUpsampler : torch::nn::Module {
  explicit VaeUpsampler(int channels);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};

// Downsample2D as the VAE encoder uses it (padding 0): pad right and
// bottom by one, then a 3×3 conv with stride 2.
struct VaeDownsampler : torch::nn::Module {
  explicit VaeDownsampler(int channels);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};

// DownEncoderBlock2D / UpDecoderBlock2D: `resnets` (the first from `in` to
// `out` channels, the others out to out), then "downsamplers.0" or
// "upsamplers.0" when the block resamples.
enum class VaeResample { kNone, kDown, kUp };
struct VaeResnetStack : torch::nn::Module {
  VaeResnetStack(int in, int out, int num_resnets, int groups, VaeResample resample);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, samplers{nullptr};
  VaeResample resample;
};

}  // namespace ditserve::worker::vae
