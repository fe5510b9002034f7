#include "worker/models/vae/vae_encoder.h"

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/vae/vae_blocks.h"
#include "worker/weights/load_module.h"

namespace ditserve::worker::vae {
namespace {

using torch::nn::ModuleList;

// diffusers' Encoder with DownEncoderBlock2D blocks and double_z.
struct Encoder : torch::nn::Module {
  explicit Encoder(const VaeConfig& c) {
    const int groups = c.norm_num_groups;
    const auto& ch = c.block_out_channels;
    conv_in = register_module("conv_in", VaeConv(c.in_channels, ch[0], 3));
    down_blocks = register_module("down_blocks", ModuleList());
    int in = ch[0];
    for (size_t i = 0; i < ch.size(); ++i) {
      down_blocks->push_back(std::make_shared<VaeResnetStack>(
          in, ch[i], c.layers_per_block, groups, i + 1 < ch.size() ? VaeResample::kDown : VaeResample::kNone));
      in = ch[i];
    }
    mid_block = register_module("mid_block", std::make_shared<VaeMidBlock>(ch.back(), groups, c.mid_block_add_attention));
    conv_norm_out = register_module("conv_norm_out", VaeNorm(groups, ch.back()));
    conv_out = register_module("conv_out", VaeConv(ch.back(), 2 * c.latent_channels, 3));
  }

  absl::StatusOr<at::Tensor> forward(const at::Tensor& image) {
    at::Tensor x = conv_in->forward(image);
    for (const auto& block : *down_blocks) x = block->as<VaeResnetStack>()->forward(x);
    auto mid = mid_block->forward(x);
    if (!mid.ok()) return mid.status();
    return conv_out->forward(at::silu(conv_norm_out->forward(*mid)));
  }

  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  ModuleList down_blocks{nullptr};
  std::shared_ptr<VaeMidBlock> mid_block;
  torch::nn::GroupNorm conv_norm_out{nullptr};
};

}  // namespace

at::Tensor LatentDistribution::Sample(at::Generator& generator) const {
  const at::Tensor noise = at::randn(mean.sizes(), generator, at::TensorOptions().dtype(at::kFloat));
  return mean + at::exp(0.5 * logvar) * noise.to(mean.device());
}

at::Tensor LatentDistribution::Kl() const {
  return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum({1, 2, 3});
}

struct VaeEncoder::Impl {
  VaeConfig config;
  std::shared_ptr<Encoder> encoder;
  torch::nn::Conv2d quant_conv{nullptr};
};

VaeEncoder::VaeEncoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VaeEncoder::~VaeEncoder() = default;
const VaeConfig& VaeEncoder::config() const { return impl_->config; }

absl::StatusOr<std::unique_ptr<VaeEncoder>> VaeEncoder::Create(const VaeConfig& config, at::ScalarType dtype) {
  if (config.block_out_channels.empty()) return absl::InvalidArgumentError("vae config: block_out_channels is empty");
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->encoder = std::make_shared<Encoder>(config);
  impl->encoder->to(dtype);
  if (config.use_quant_conv) {
    impl->quant_conv = VaeConv(2 * config.latent_channels, 2 * config.latent_channels, 1);
    impl->quant_conv->to(dtype);
  }
  return std::unique_ptr<VaeEncoder>(new VaeEncoder(std::move(impl)));
}

std::vector<std::pair<std::string, at::Tensor>> VaeEncoder::NamedParameters() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : impl_->encoder->named_parameters()) out.push_back({"encoder." + p.key(), p.value()});
  if (impl_->quant_conv) {
    for (const auto& p : impl_->quant_conv->named_parameters()) out.push_back({"quant_conv." + p.key(), p.value()});
  }
  return out;
}

absl::Status VaeEncoder::Load(const weights::SafetensorsCheckpoint& checkpoint) {
  if (absl::Status s = weights::LoadModuleWeights(*impl_->encoder, checkpoint, "encoder."); !s.ok()) return s;
  if (impl_->quant_conv) return weights::LoadModuleWeights(*impl_->quant_conv, checkpoint, "quant_conv.");
  return absl::OkStatus();
}

void VaeEncoder::To(c10::Device device) {
  impl_->encoder->to(device);
  if (impl_->quant_conv) impl_->quant_conv->to(device);
}

absl::StatusOr<LatentDistribution> VaeEncoder::Encode(const at::Tensor& image) const {
  const VaeConfig& c = impl_->config;
  const int64_t f = c.scale_factor();
  if (!image.defined() || image.dim() != 4 || image.size(1) != c.in_channels || image.size(2) % f != 0 ||
      image.size(3) % f != 0 || image.size(2) == 0 || image.size(3) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("vae encoder: image must be [B, ", c.in_channels,
                                                   ", H, W] with H and W positive multiples of ", f));
  }
  auto moments = impl_->encoder->forward(image.to(impl_->encoder->conv_in->weight.scalar_type()));
  if (!moments.ok()) return moments.status();
  at::Tensor m = *moments;
  if (impl_->quant_conv) m = impl_->quant_conv->forward(m);
  m = m.to(at::kFloat);
  const auto parts = m.chunk(2, 1);
  return LatentDistribution{parts[0], parts[1].clamp(-30.0, 20.0)};
}

}  // namespace ditserve::worker::vae
