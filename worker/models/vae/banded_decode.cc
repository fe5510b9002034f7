// VaeDecoder::DecodeBand: the decoder's forward pass on one band of rows,
// with the cross-row operations through a VaeBandExchange. Mirrors
// Decoder::forward and the blocks' forwards in vae_blocks.cc step by step.

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/models/vae/decoder_modules.h"

namespace ditserve::worker::vae {
namespace {

class BandWalk {
 public:
  explicit BandWalk(VaeBandExchange& exchange) : exchange_(exchange) {}
  int64_t peak_bytes() const { return peak_bytes_; }

  // A 3×3 convolution with padding 1: the halo rows stand in for the
  // padding between bands; the columns are padded as in the whole decode.
  absl::StatusOr<at::Tensor> Conv3x3(const Conv2d& conv, const at::Tensor& x) {
    auto halo = exchange_.WithHalo(x);
    if (!halo.ok()) return halo.status();
    Track(*halo);
    return Track(at::conv2d(*halo, conv->weight, conv->bias, at::IntArrayRef{1, 1}, at::IntArrayRef{0, 1}));
  }

  // GroupNorm over every band: per (sample, group) sums, sums of squares
  // and counts in float64, summed over the ranks.
  absl::StatusOr<at::Tensor> Norm(const GroupNorm& norm, const at::Tensor& x) {
    const int64_t B = x.size(0), C = x.size(1), G = norm->options.num_groups();
    const at::Tensor grouped = x.to(at::kDouble).reshape({B, G, -1});
    at::Tensor stats = at::stack({grouped.sum(2), grouped.pow(2).sum(2),
                                  at::full({B, G}, static_cast<double>(grouped.size(2)), grouped.options())});
    if (absl::Status s = exchange_.Sum(stats); !s.ok()) return s;
    const at::Tensor mean = stats[0] / stats[2];
    const at::Tensor var = (stats[1] / stats[2] - mean * mean).clamp_min(0);
    const at::Tensor normalized =
        ((grouped - mean.unsqueeze(2)) / (var.unsqueeze(2) + norm->options.eps()).sqrt()).view(x.sizes());
    const at::Tensor scale = norm->weight.to(at::kDouble).view({1, C, 1, 1});
    const at::Tensor shift = norm->bias.to(at::kDouble).view({1, C, 1, 1});
    return Track((normalized * scale + shift).to(x.scalar_type()));
  }

  absl::StatusOr<at::Tensor> Resnet(VaeResnet& r, const at::Tensor& x) {
    auto h = Norm(r.norm1, x);
    if (!h.ok()) return h;
    h = Conv3x3(r.conv1, at::silu(*h));
    if (!h.ok()) return h;
    h = Norm(r.norm2, *h);
    if (!h.ok()) return h;
    h = Conv3x3(r.conv2, at::silu(*h));
    if (!h.ok()) return h;
    return Track((r.conv_shortcut ? r.conv_shortcut->forward(x) : x) + *h);
  }

  // Queries from this band's pixels, keys and values from every band's.
  absl::StatusOr<at::Tensor> Attention(VaeSpatialAttention& a, const at::Tensor& x) {
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    auto normalized = Norm(a.group_norm, x);
    if (!normalized.ok()) return normalized;
    auto all = exchange_.GatherBands(*normalized);
    if (!all.ok()) return all;
    Track(*all);
    const auto tokens = [&](const at::Tensor& t) { return t.reshape({B, C, -1}).transpose(1, 2); };  // [B, N, C]
    const at::Tensor mine = tokens(*normalized), every = tokens(*all);
    auto r = kernels::AttentionWithLse(a.to_q->forward(mine).unsqueeze(2), a.to_k->forward(every).unsqueeze(2),
                                       a.to_v->forward(every).unsqueeze(2), at::Tensor());
    if (!r.ok()) return r.status();
    const at::Tensor o = a.out->forward(r->out.squeeze(2).to(x.scalar_type()));
    return Track(x + o.transpose(1, 2).reshape({B, C, H, W}));
  }

  absl::StatusOr<at::Tensor> Mid(VaeMidBlock& m, const at::Tensor& x) {
    auto h = Resnet(*m.resnets[0]->as<VaeResnet>(), x);
    if (!h.ok()) return h;
    if (m.attentions) {
      h = Attention(*m.attentions[0]->as<VaeSpatialAttention>(), *h);
      if (!h.ok()) return h;
    }
    return Resnet(*m.resnets[1]->as<VaeResnet>(), *h);
  }

  // Nearest ×2 doubles each band's rows, so the bands stay in rank order.
  absl::StatusOr<at::Tensor> Up(VaeResnetStack& stack, const at::Tensor& input) {
    at::Tensor x = input;
    for (const auto& r : *stack.resnets) {
      auto h = Resnet(*r->as<VaeResnet>(), x);
      if (!h.ok()) return h;
      x = *h;
    }
    if (stack.resample == VaeResample::kUp) {
      const at::Tensor up = Track(at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
      return Conv3x3(stack.samplers[0]->as<VaeUpsampler>()->conv, up);
    }
    return x;
  }

 private:
  const at::Tensor& Track(const at::Tensor& t) {
    peak_bytes_ = std::max(peak_bytes_, static_cast<int64_t>(t.nbytes()));
    return t;
  }

  VaeBandExchange& exchange_;
  int64_t peak_bytes_ = 0;
};

}  // namespace

absl::StatusOr<at::Tensor> VaeDecoder::DecodeBand(const at::Tensor& latent_band, VaeBandExchange& exchange,
                                                  int64_t* peak_bytes) const {
  const VaeConfig& c = impl_->config;
  if (!latent_band.defined() || latent_band.dim() != 4 || latent_band.size(1) != c.latent_channels ||
      latent_band.size(2) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("vae: a latent band must be [B, ", c.latent_channels, ", rows >= 1, w]"));
  }
  Decoder& d = *impl_->decoder;
  BandWalk walk(exchange);
  at::Tensor z = latent_band.to(d.conv_in->weight.scalar_type());
  if (impl_->post_quant_conv) z = impl_->post_quant_conv->forward(z);
  auto x = walk.Conv3x3(d.conv_in, z);
  if (!x.ok()) return x;
  x = walk.Mid(*d.mid_block, *x);
  if (!x.ok()) return x;
  for (const auto& block : *d.up_blocks) {
    x = walk.Up(*block->as<VaeResnetStack>(), *x);
    if (!x.ok()) return x;
  }
  x = walk.Norm(d.conv_norm_out, *x);
  if (!x.ok()) return x;
  x = walk.Conv3x3(d.conv_out, at::silu(*x));
  if (!x.ok()) return x;
  if (peak_bytes != nullptr) *peak_bytes = walk.peak_bytes();
  return x->to(at::kFloat);
}

}  // namespace ditserve::worker::vae
