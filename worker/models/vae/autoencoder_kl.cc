#include "worker/models/vae/autoencoder_kl.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention.h"
#include "worker/weights/load_module.h"

namespace ditserve::worker::vae {
namespace {

using torch::nn::Conv2d;
using torch::nn::Conv2dOptions;
using torch::nn::GroupNorm;
using torch::nn::GroupNormOptions;
using torch::nn::Linear;
using torch::nn::ModuleList;

constexpr double kEps = 1e-6;

GroupNorm Norm(int groups, int channels) { return GroupNorm(GroupNormOptions(groups, channels).eps(kEps)); }
Conv2d Conv(int in, int out, int k) { return Conv2d(Conv2dOptions(in, out, k).padding(k / 2)); }

struct Resnet : torch::nn::Module {
  Resnet(int in, int out, int groups) {
    norm1 = register_module("norm1", Norm(groups, in));
    conv1 = register_module("conv1", Conv(in, out, 3));
    norm2 = register_module("norm2", Norm(groups, out));
    conv2 = register_module("conv2", Conv(out, out, 3));
    if (in != out) conv_shortcut = register_module("conv_shortcut", Conv(in, out, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = conv1->forward(at::silu(norm1->forward(x)));
    h = conv2->forward(at::silu(norm2->forward(h)));
    return (conv_shortcut ? conv_shortcut->forward(x) : x) + h;
  }
  GroupNorm norm1{nullptr}, norm2{nullptr};
  Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};

// The mid block's single-head self-attention over all pixels.
struct SpatialAttention : torch::nn::Module {
  SpatialAttention(int channels, int groups) {
    group_norm = register_module("group_norm", Norm(groups, channels));
    to_q = register_module("to_q", Linear(channels, channels));
    to_k = register_module("to_k", Linear(channels, channels));
    to_v = register_module("to_v", Linear(channels, channels));
    to_out = register_module("to_out", ModuleList());
    out = Linear(channels, channels);
    to_out->push_back(out);
  }
  absl::StatusOr<at::Tensor> forward(const at::Tensor& x) {
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const at::Tensor h = group_norm->forward(x).view({B, C, H * W}).transpose(1, 2);  // [B, HW, C]
    const auto heads = [&](const at::Tensor& t) { return t.unsqueeze(2); };          // [B, HW, 1, C]
    auto r = kernels::AttentionWithLse(heads(to_q->forward(h)), heads(to_k->forward(h)),
                                       heads(to_v->forward(h)), at::Tensor());
    if (!r.ok()) return r.status();
    const at::Tensor o = out->forward(r->out.squeeze(2).to(x.scalar_type()));
    return x + o.transpose(1, 2).reshape({B, C, H, W});
  }
  GroupNorm group_norm{nullptr};
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out{nullptr};
  ModuleList to_out{nullptr};
};

struct Upsampler : torch::nn::Module {
  explicit Upsampler(int channels) { conv = register_module("conv", Conv(channels, channels, 3)); }
  at::Tensor forward(const at::Tensor& x) {
    return conv->forward(at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
  }
  Conv2d conv{nullptr};
};

struct Empty : torch::nn::Module {};

struct Decoder : torch::nn::Module {
  explicit Decoder(const VaeConfig& c) {
    const int groups = c.norm_num_groups;
    std::vector<int> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
    conv_in = register_module("conv_in", Conv(c.latent_channels, rev[0], 3));
    auto mid = register_module("mid_block", std::make_shared<Empty>());
    mid_resnets = mid->register_module("resnets", ModuleList());
    mid_resnets->push_back(std::make_shared<Resnet>(rev[0], rev[0], groups));
    mid_resnets->push_back(std::make_shared<Resnet>(rev[0], rev[0], groups));
    if (c.mid_block_add_attention) {
      mid_attentions = mid->register_module("attentions", ModuleList());
      mid_attentions->push_back(std::make_shared<SpatialAttention>(rev[0], groups));
    }
    up_blocks = register_module("up_blocks", ModuleList());
    int out = rev[0];
    for (size_t i = 0; i < rev.size(); ++i) {
      const int prev = out;
      out = rev[i];
      auto block = std::make_shared<Empty>();
      auto resnets = block->register_module("resnets", ModuleList());
      for (int j = 0; j < c.layers_per_block + 1; ++j) {
        resnets->push_back(std::make_shared<Resnet>(j == 0 ? prev : out, out, groups));
      }
      if (i + 1 < rev.size()) {
        auto ups = block->register_module("upsamplers", ModuleList());
        ups->push_back(std::make_shared<Upsampler>(out));
      }
      up_blocks->push_back(block);
    }
    conv_norm_out = register_module("conv_norm_out", Norm(groups, c.block_out_channels[0]));
    conv_out = register_module("conv_out", Conv(c.block_out_channels[0], c.out_channels, 3));
  }

  absl::StatusOr<at::Tensor> forward(const at::Tensor& z) {
    at::Tensor x = conv_in->forward(z);
    x = mid_resnets[0]->as<Resnet>()->forward(x);
    if (mid_attentions) {
      auto a = mid_attentions[0]->as<SpatialAttention>()->forward(x);
      if (!a.ok()) return a.status();
      x = *a;
    }
    x = mid_resnets[1]->as<Resnet>()->forward(x);
    for (const auto& block : *up_blocks) {
      for (const auto& child : block->named_children()) {
        if (child.key() != "resnets") continue;
        for (const auto& r : *child.value()->as<ModuleList>()) x = r->as<Resnet>()->forward(x);
      }
      for (const auto& child : block->named_children()) {
        if (child.key() != "upsamplers") continue;
        for (const auto& u : *child.value()->as<ModuleList>()) x = u->as<Upsampler>()->forward(x);
      }
    }
    return conv_out->forward(at::silu(conv_norm_out->forward(x)));
  }

  Conv2d conv_in{nullptr}, conv_out{nullptr};
  ModuleList mid_resnets{nullptr}, mid_attentions{nullptr}, up_blocks{nullptr};
  GroupNorm conv_norm_out{nullptr};
};

}  // namespace

absl::StatusOr<VaeConfig> ParseVaeConfig(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("vae config: not a JSON object");
  VaeConfig c;
  const auto integer = [&](const char* key, int* out) -> absl::Status {
    if (!j.contains(key)) return absl::OkStatus();
    if (!j[key].is_number_integer() || j[key].get<int>() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("vae config: ", key, " must be a positive integer"));
    }
    *out = j[key].get<int>();
    return absl::OkStatus();
  };
  for (auto [key, out] : {std::pair{"latent_channels", &c.latent_channels}, {"out_channels", &c.out_channels},
                          {"layers_per_block", &c.layers_per_block}, {"norm_num_groups", &c.norm_num_groups}}) {
    if (absl::Status s = integer(key, out); !s.ok()) return s;
  }
  if (j.contains("block_out_channels")) {
    c.block_out_channels.clear();
    for (const auto& v : j["block_out_channels"]) {
      if (!v.is_number_integer() || v.get<int>() < 1) {
        return absl::InvalidArgumentError("vae config: block_out_channels must be positive integers");
      }
      c.block_out_channels.push_back(v.get<int>());
    }
  }
  if (c.block_out_channels.empty()) return absl::InvalidArgumentError("vae config: block_out_channels is empty");
  for (int ch : c.block_out_channels) {
    if (ch % c.norm_num_groups != 0) {
      return absl::InvalidArgumentError(absl::StrCat("vae config: block_out_channels ", ch,
                                                     " does not divide by norm_num_groups ", c.norm_num_groups));
    }
  }
  if (j.contains("scaling_factor") && j["scaling_factor"].is_number()) c.scaling_factor = j["scaling_factor"].get<double>();
  c.shift_factor = (j.contains("shift_factor") && j["shift_factor"].is_number()) ? j["shift_factor"].get<double>() : 0.0;
  if (c.scaling_factor == 0) return absl::InvalidArgumentError("vae config: scaling_factor must not be 0");
  if (j.contains("use_post_quant_conv") && j["use_post_quant_conv"].is_boolean()) {
    c.use_post_quant_conv = j["use_post_quant_conv"].get<bool>();
  } else if (!j.contains("use_post_quant_conv")) {
    c.use_post_quant_conv = true;  // diffusers' default
  }
  if (j.contains("sample_size") && j["sample_size"].is_number_integer() && j["sample_size"].get<int>() > 0) {
    c.sample_size = j["sample_size"].get<int>();
  }
  if (j.contains("mid_block_add_attention") && j["mid_block_add_attention"].is_boolean()) {
    c.mid_block_add_attention = j["mid_block_add_attention"].get<bool>();
  }
  if (j.contains("act_fn") && j["act_fn"] != "silu") {
    return absl::InvalidArgumentError(absl::StrCat("vae config: act_fn ", j["act_fn"].dump(), " is not supported"));
  }
  if (j.contains("up_block_types")) {
    if (!j["up_block_types"].is_array() || j["up_block_types"].size() != c.block_out_channels.size()) {
      return absl::InvalidArgumentError("vae config: up_block_types must match block_out_channels");
    }
    for (const auto& t : j["up_block_types"]) {
      if (t != "UpDecoderBlock2D") {
        return absl::InvalidArgumentError(absl::StrCat("vae config: up block ", t.dump(), " is not supported"));
      }
    }
  }
  return c;
}

struct VaeDecoder::Impl {
  VaeConfig config;
  std::shared_ptr<Decoder> decoder;
  Conv2d post_quant_conv{nullptr};
};

VaeDecoder::VaeDecoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VaeDecoder::~VaeDecoder() = default;
const VaeConfig& VaeDecoder::config() const { return impl_->config; }

std::vector<std::pair<std::string, at::Tensor>> VaeDecoder::NamedParameters() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : impl_->decoder->named_parameters()) out.push_back({"decoder." + p.key(), p.value()});
  if (impl_->post_quant_conv) {
    for (const auto& p : impl_->post_quant_conv->named_parameters()) out.push_back({"post_quant_conv." + p.key(), p.value()});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<VaeDecoder>> VaeDecoder::Create(const VaeConfig& config, at::ScalarType dtype) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->decoder = std::make_shared<Decoder>(config);
  impl->decoder->to(dtype);
  if (config.use_post_quant_conv) {
    impl->post_quant_conv = Conv(config.latent_channels, config.latent_channels, 1);
    impl->post_quant_conv->to(dtype);
  }
  return std::unique_ptr<VaeDecoder>(new VaeDecoder(std::move(impl)));
}

absl::Status VaeDecoder::Load(const weights::SafetensorsCheckpoint& checkpoint) {
  if (absl::Status s = weights::LoadModuleWeights(*impl_->decoder, checkpoint, "decoder."); !s.ok()) return s;
  if (impl_->post_quant_conv) {
    return weights::LoadModuleWeights(*impl_->post_quant_conv, checkpoint, "post_quant_conv.");
  }
  return absl::OkStatus();
}

void VaeDecoder::To(c10::Device device) {
  impl_->decoder->to(device);
  if (impl_->post_quant_conv) impl_->post_quant_conv->to(device);
}

absl::StatusOr<at::Tensor> VaeDecoder::Decode(const at::Tensor& latents) const {
  const VaeConfig& c = impl_->config;
  if (!latents.defined() || latents.dim() != 4 || latents.size(1) != c.latent_channels) {
    return absl::InvalidArgumentError(absl::StrCat("vae: latents must be [B, ", c.latent_channels, ", h, w]"));
  }
  at::NoGradGuard no_grad;
  at::Tensor z = latents.to(impl_->decoder->conv_in->weight.scalar_type());
  if (impl_->post_quant_conv) z = impl_->post_quant_conv->forward(z);
  auto image = impl_->decoder->forward(z);
  if (!image.ok()) return image.status();
  return image->to(at::kFloat);
}

at::Tensor ToUint8Rgb(const at::Tensor& image) {
  return (image.to(at::kFloat) / 2 + 0.5).clamp(0, 1).mul(255).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous().cpu();
}

}  // namespace ditserve::worker::vae
