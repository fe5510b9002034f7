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
  // and counts in float64 (one group at a time, so no float64 copy of the
  // whole map is made), summed over the ranks; then, as LibTorch's CPU
  // group norm, y = x·a + b per channel with a = γ·rstd, b = β − a·mean.
  absl::StatusOr<at::Tensor> Norm(const GroupNorm& norm, const at::Tensor& x) {
    const int64_t B = x.size(0), C = x.size(1), G = norm->options.num_groups();
    const at::Tensor grouped = x.reshape({B, G, -1});
    at::Tensor stats = at::empty({3, B, G}, x.options().dtype(at::kDouble));
    for (int64_t g = 0; g < G; ++g) {
      const at::Tensor part = grouped.select(1, g).to(at::kDouble);  // [B, elements of the group]
      stats[0].select(1, g).copy_(part.sum(1));
      stats[1].select(1, g).copy_(part.pow(2).sum(1));
    }
    stats[2].fill_(static_cast<double>(grouped.size(2)));
    if (absl::Status s = exchange_.Sum(stats); !s.ok()) return s;
    const at::Tensor mean = stats[0] / stats[2];                                   // [B, G]
    const at::Tensor var = (stats[1] / stats[2] - mean * mean).clamp_min(0);
    const at::Tensor rstd = (var + norm->options.eps()).rsqrt();
    const auto per_channel = [&](const at::Tensor& t) {  // [B, G] -> [B, C, 1, 1]
      return t.repeat_interleave(C / G, 1).view({B, C, 1, 1});
    };
    const at::Tensor a = per_channel(rstd) * norm->weight.to(at::kDouble).view({1, C, 1, 1});
    const at::Tensor b = norm->bias.to(at::kDouble).view({1, C, 1, 1}) - a * per_channel(mean);
    return Track((x.to(at::kFloat) * a.to(at::kFloat) + b.to(at::kFloat)).to(x.scalar_type()));
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

absl::StatusOr<at::Tensor> SingleBandExchange::WithHalo(const at::Tensor& x) {
  return at::constant_pad_nd(x, {0, 0, 1, 1});
}

// Walks the decoder's layers as BandWalk does, taking the larger of every
// tensor BandWalk tracks: each 3×3 convolution's halo'd input and output,
// each norm's output, the resnets' sums, the gathered attention input, the
// upsampled maps.
int64_t DecodeActivationBytes(const VaeConfig& c, const DecodeShape& shape, int64_t element_bytes,
                              int64_t halo_rows) {
  int64_t rows = shape.band_rows, all_rows = shape.rows, cols = shape.cols, most = 0;
  const auto map = [&](int64_t channels, int64_t r) {
    most = std::max(most, shape.batch * channels * r * cols * element_bytes);
  };
  const auto conv = [&](int64_t in, int64_t out) {
    map(in, rows + halo_rows);
    map(out, rows);
  };
  const auto resnet = [&](int64_t in, int64_t out) {
    map(in, rows);  // norm1
    conv(in, out);
    map(out, rows);  // norm2
    conv(out, out);
  };
  const int64_t top = c.block_out_channels.back();
  conv(c.latent_channels, top);
  resnet(top, top);
  if (c.mid_block_add_attention) {
    map(top, rows);
    map(top, all_rows);
  }
  resnet(top, top);
  int64_t in = top;
  const int levels = static_cast<int>(c.block_out_channels.size());
  for (int i = 0; i < levels; ++i) {
    const int64_t out = c.block_out_channels[levels - 1 - i];
    for (int j = 0; j <= c.layers_per_block; ++j) {
      resnet(in, out);
      in = out;
    }
    if (i + 1 < levels) {
      rows *= 2;
      all_rows *= 2;
      cols *= 2;
      map(out, rows);  // nearest ×2
      conv(out, out);
    }
  }
  map(in, rows);  // conv_norm_out
  conv(in, c.out_channels);
  return most;
}

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
