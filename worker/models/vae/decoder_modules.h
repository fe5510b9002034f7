#pragma once

// The AutoencoderKL decoder's module tree (diffusers' names) and
// VaeDecoder's state, shared by the whole decode (autoencoder_kl.cc) and
// the banded one (banded_decode.cc). Internal to worker/models/vae.

#include <memory>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include "absl/status/statusor.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/models/vae/vae_blocks.h"

namespace ditserve::worker::vae {

using torch::nn::Conv2d;
using torch::nn::GroupNorm;
using torch::nn::ModuleList;


using torch::nn::Conv2d;
using torch::nn::GroupNorm;
using torch::nn::ModuleList;

struct Decoder : torch::nn::Module {
  explicit Decoder(const VaeConfig& c) {
    const int groups = c.norm_num_groups;
    std::vector<int> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
    conv_in = register_module("conv_in", VaeConv(c.latent_channels, rev[0], 3));
    mid_block = register_module("mid_block", std::make_shared<VaeMidBlock>(rev[0], groups, c.mid_block_add_attention));
    up_blocks = register_module("up_blocks", ModuleList());
    int out = rev[0];
    for (size_t i = 0; i < rev.size(); ++i) {
      up_blocks->push_back(std::make_shared<VaeResnetStack>(
          out, rev[i], c.layers_per_block + 1, groups, i + 1 < rev.size() ? VaeResample::kUp : VaeResample::kNone));
      out = rev[i];
    }
    conv_norm_out = register_module("conv_norm_out", VaeNorm(groups, c.block_out_channels[0]));
    conv_out = register_module("conv_out", VaeConv(c.block_out_channels[0], c.out_channels, 3));
  }

  absl::StatusOr<at::Tensor> forward(const at::Tensor& z) {
    auto mid = mid_block->forward(conv_in->forward(z));
    if (!mid.ok()) return mid.status();
    at::Tensor x = *mid;
    for (const auto& block : *up_blocks) x = block->as<VaeResnetStack>()->forward(x);
    return conv_out->forward(at::silu(conv_norm_out->forward(x)));
  }

  Conv2d conv_in{nullptr}, conv_out{nullptr};
  std::shared_ptr<VaeMidBlock> mid_block;
  ModuleList up_blocks{nullptr};
  GroupNorm conv_norm_out{nullptr};
};

struct VaeDecoder::Impl {
  VaeConfig config;
  std::shared_ptr<Decoder> decoder;
  Conv2d post_quant_conv{nullptr};
};

}  // namespace ditserve::worker::vae
