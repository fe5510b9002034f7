#pragma once

// Layers that the DiT families share (Flux, SD3, …), registered under
// diffusers' parameter names so that a family only wires them: RMS norm,
// the two-layer embedders, AdaLN modulation linears and the tanh-GELU
// feed-forward. Header of torch::nn modules: include it from model .cc
// files only.

#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include "worker/models/common/dense.h"
#include "worker/models/common/dit_transformer.h"

namespace ditserve::worker::models {

// A module whose only content is named parameters and submodules.
struct Empty : torch::nn::Module {};

// LayerNorm over the last dimension without affine parameters, eps 1e-6.
at::Tensor LayerNormNoAffine(const at::Tensor& x);
// LayerNormNoAffine(x)·(1 + scale) + shift, scale and shift [B, dim].
at::Tensor Modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale);
// Interleaved rotary embedding (diffusers' apply_rotary_emb with
// use_real_unbind_dim -1: Flux, HunyuanDiT): (x.float()·cos +
// rotate_half_interleaved(x).float()·sin).to(x.dtype) on [B, S, H, D] with
// cos/sin [S, D] (each frequency twice, interleaved). In float32 it is one
// complex product per (even, odd) pair, the same arithmetic in one pass
// (the five-op form costs about 15× as much on CPU).
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// float16 activations clamped to its range (diffusers does it after each
// MMDiT block); other dtypes unchanged.
at::Tensor ClampHalf(const at::Tensor& x);

// diffusers' RMSNorm(dim, eps 1e-6, elementwise_affine=True).
struct RmsNorm : torch::nn::Module {
  RmsNorm(int64_t dim, const ParameterSpec& p);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight;
};

// linear_1 -> SiLU -> linear_2 (TimestepEmbedding, PixArtAlphaTextProjection).
struct TwoLayer : torch::nn::Module {
  TwoLayer(int64_t in, int64_t out, const ParameterSpec& p);
  at::Tensor forward(const at::Tensor& x);
  std::shared_ptr<Dense> linear_1, linear_2;
};

// AdaLayerNormZero (6 chunks), SD35AdaLayerNormZeroX (9),
// AdaLayerNormZeroSingle (3), AdaLayerNormContinuous (2: scale, shift):
// a "linear" applied to SiLU(temb).
struct AdaNorm : torch::nn::Module {
  AdaNorm(int64_t dim, int chunks, const ParameterSpec& p);
  // Linear(SiLU(temb)): [B, chunks·dim]; split with chunk(chunks, 1).
  at::Tensor Modulation(const at::Tensor& temb);
  std::shared_ptr<Dense> linear;
};

// PatchEmbed's proj, nn.Conv2d(C, dim, kernel = stride = 2) (SD3, PixArt):
// its weight [dim, C, 2, 2] flattened is a linear on tokens packed in
// (channel, dy, dx) order. Initialised as torch::nn::Conv2d when asked.
struct PatchProj : torch::nn::Module {
  PatchProj(int64_t in_channels, int64_t dim, const ParameterSpec& p);
  // [B, S, 4C] → [B, S, dim].
  at::Tensor forward(const at::Tensor& tokens) const;
  at::Tensor weight, bias;
};

// FeedForward(dim, activation "gelu-approximate", inner_dim): net.0.proj,
// net.2; `inner` 0 means 4·dim (diffusers' default).
struct FeedForward : torch::nn::Module {
  FeedForward(int64_t dim, const ParameterSpec& p, int64_t inner = 0);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::ModuleList net{nullptr};
  std::shared_ptr<Dense> proj, out;
};

}  // namespace ditserve::worker::models
