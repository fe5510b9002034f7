#include "worker/models/vae/vae_blocks.h"

#include <ATen/ATen.h>

#include "kernels/attention.h"

namespace ditserve::worker::vae {

using torch::nn::Conv2d;
using torch::nn::Conv2dOptions;
using torch::nn::GroupNorm;
using torch::nn::GroupNormOptions;
using torch::nn::Linear;
using torch::nn::ModuleList;

GroupNorm VaeNorm(int groups, int channels) { return GroupNorm(GroupNormOptions(groups, channels).eps(1e-6)); }
Conv2d VaeConv(int in, int out, int k) { return Conv2d(Conv2dOptions(in, out, k).padding(k / 2)); }

VaeResnet::VaeResnet(int in, int out, int groups) {
  norm1 = register_module("norm1", VaeNorm(groups, in));
  conv1 = register_module("conv1", VaeConv(in, out, 3));
  norm2 = register_module("norm2", VaeNorm(groups, out));
  conv2 = register_module("conv2", VaeConv(out, out, 3));
  if (in != out) conv_shortcut = register_module("conv_shortcut", VaeConv(in, out, 1));
}

at::Tensor VaeResnet::forward(const at::Tensor& x) {
  at::Tensor h = conv1->forward(at::silu(norm1->forward(x)));
  h = conv2->forward(at::silu(norm2->forward(h)));
  return (conv_shortcut ? conv_shortcut->forward(x) : x) + h;
}

VaeSpatialAttention::VaeSpatialAttention(int channels, int groups) {
  group_norm = register_module("group_norm", VaeNorm(groups, channels));
  to_q = register_module("to_q", Linear(channels, channels));
  to_k = register_module("to_k", Linear(channels, channels));
  to_v = register_module("to_v", Linear(channels, channels));
  to_out = register_module("to_out", ModuleList());
  out = Linear(channels, channels);
  to_out->push_back(out);
}

absl::StatusOr<at::Tensor> VaeSpatialAttention::forward(const at::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const at::Tensor h = group_norm->forward(x).view({B, C, H * W}).transpose(1, 2);  // [B, HW, C]
  const auto heads = [&](const at::Tensor& t) { return t.unsqueeze(2); };          // [B, HW, 1, C]
  auto r = kernels::AttentionWithLse(heads(to_q->forward(h)), heads(to_k->forward(h)), heads(to_v->forward(h)),
                                     at::Tensor());
  if (!r.ok()) return r.status();
  const at::Tensor o = out->forward(r->out.squeeze(2).to(x.scalar_type()));
  return x + o.transpose(1, 2).reshape({B, C, H, W});
}

VaeMidBlock::VaeMidBlock(int channels, int groups, bool attention) {
  resnets = register_module("resnets", ModuleList());
  resnets->push_back(std::make_shared<VaeResnet>(channels, channels, groups));
  resnets->push_back(std::make_shared<VaeResnet>(channels, channels, groups));
  if (attention) {
    attentions = register_module("attentions", ModuleList());
    attentions->push_back(std::make_shared<VaeSpatialAttention>(channels, groups));
  }
}

absl::StatusOr<at::Tensor> VaeMidBlock::forward(const at::Tensor& x) {
  at::Tensor h = resnets[0]->as<VaeResnet>()->forward(x);
  if (attentions) {
    auto a = attentions[0]->as<VaeSpatialAttention>()->forward(h);
    if (!a.ok()) return a.status();
    h = *a;
  }
  return resnets[1]->as<VaeResnet>()->forward(h);
}

VaeUpsampler::VaeUpsampler(int channels) { conv = register_module("conv", VaeConv(channels, channels, 3)); }

at::Tensor VaeUpsampler::forward(const at::Tensor& x) {
  return conv->forward(at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
}

VaeDownsampler::VaeDownsampler(int channels) {
  conv = register_module("conv", Conv2d(Conv2dOptions(channels, channels, 3).stride(2).padding(0)));
}

at::Tensor VaeDownsampler::forward(const at::Tensor& x) {
  return conv->forward(at::constant_pad_nd(x, {0, 1, 0, 1}, 0));
}

VaeResnetStack::VaeResnetStack(int in, int out, int num_resnets, int groups, VaeResample resample)
    : resample(resample) {
  resnets = register_module("resnets", ModuleList());
  for (int j = 0; j < num_resnets; ++j) resnets->push_back(std::make_shared<VaeResnet>(j == 0 ? in : out, out, groups));
  if (resample == VaeResample::kDown) {
    samplers = register_module("downsamplers", ModuleList());
    samplers->push_back(std::make_shared<VaeDownsampler>(out));
  } else if (resample == VaeResample::kUp) {
    samplers = register_module("upsamplers", ModuleList());
    samplers->push_back(std::make_shared<VaeUpsampler>(out));
  }
}

at::Tensor VaeResnetStack::forward(const at::Tensor& input) {
  at::Tensor x = input;
  for (const auto& r : *resnets) x = r->as<VaeResnet>()->forward(x);
  if (resample == VaeResample::kDown) x = samplers[0]->as<VaeDownsampler>()->forward(x);
  if (resample == VaeResample::kUp) x = samplers[0]->as<VaeUpsampler>()->forward(x);
  return x;
}

}  // namespace ditserve::worker::vae
