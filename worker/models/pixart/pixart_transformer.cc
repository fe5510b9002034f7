#include "worker/models/pixart/pixart_transformer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/common/dense.h"
#include "worker/models/common/dit_blocks.h"

namespace ditserve::worker::pixart {
namespace {

using models::DitConditioning;
using models::DitHidden;
using models::DitPart;
using models::DitPositions;
using models::Empty;
using models::FeedForward;
using models::JointAttention;
using models::ParameterSpec;
using models::PatchProj;
using models::Qkv;
using models::TwoLayer;
using Linear = std::shared_ptr<models::Dense>;
using torch::nn::ModuleList;

at::Tensor LayerNorm(const at::Tensor& x, double eps) { return at::layer_norm(x, {x.size(-1)}, {}, {}, eps); }

// A parameter of `sizes` drawn as diffusers' torch.randn(sizes) / sqrt(dim)
// when initialising (the scale-shift tables), else left for the load.
at::Tensor Table(at::IntArrayRef sizes, int64_t dim, const ParameterSpec& p) {
  if (p.init != models::ParameterInit::kTorchDefault) return at::empty(sizes, at::TensorOptions().dtype(p.dtype));
  return at::randn(sizes, at::kFloat) / std::sqrt(static_cast<double>(dim));
}

// diffusers' Attention (AttnProcessor2_0): to_q, to_k, to_v (bias as the
// config's attention_bias), to_out.0 (always biased). `kv_dim`: the width
// of the keys' source (the caption projection for attn2).
struct Attention : torch::nn::Module {
  Attention(int64_t dim, int64_t kv_dim, int64_t heads, int64_t head_dim, bool bias, const ParameterSpec& p)
      : heads(heads), head_dim(head_dim) {
    to_q = register_module("to_q", std::make_shared<models::Dense>(dim, dim, p, bias));
    to_k = register_module("to_k", std::make_shared<models::Dense>(kv_dim, dim, p, bias));
    to_v = register_module("to_v", std::make_shared<models::Dense>(kv_dim, dim, p, bias));
    to_out = register_module("to_out", ModuleList());
    out = std::make_shared<models::Dense>(dim, dim, p);
    to_out->push_back(out);  // to_out.1 is a dropout
  }
  at::Tensor Heads(const at::Tensor& x) const { return x.unflatten(-1, {heads, head_dim}); }
  int64_t heads, head_dim;
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out{nullptr};
  ModuleList to_out{nullptr};
};

// BasicTransformerBlock with norm_type "ada_norm_single": norm1 and norm2
// are LayerNorms without parameters; attn1 self-attention, attn2 cross-
// attention (applied to the un-normalised hidden states, as diffusers does
// for PixArt), ff; scale_shift_table [6, dim].
struct Block : torch::nn::Module {
  Block(const PixArtTransformerConfig& c, const ParameterSpec& p) : eps(c.norm_eps) {
    const int64_t dim = c.inner_dim();
    attn1 = register_module("attn1", std::make_shared<Attention>(dim, dim, c.num_attention_heads,
                                                                 c.attention_head_dim, c.attention_bias, p));
    attn2 = register_module("attn2", std::make_shared<Attention>(dim, c.cross_attention_dim, c.num_attention_heads,
                                                                 c.attention_head_dim, c.attention_bias, p));
    ff = register_module("ff", std::make_shared<FeedForward>(dim, p));
    scale_shift_table = register_parameter("scale_shift_table", Table({6, dim}, dim, p));
  }

  // `modulation` [B, 6·dim]: shift, scale, gate (msa); shift, scale, gate (mlp).
  absl::Status Forward(int layer, DitHidden& h, const at::Tensor& modulation, JointAttention& attention) {
    const auto m = modulation.chunk(6, 1);
    const auto mod = [](const at::Tensor& t) { return t.unsqueeze(1); };
    at::Tensor x = h.x;
    const at::Tensor n1 = LayerNorm(x, eps) * (1 + mod(m[1])) + mod(m[0]);
    auto a = attention.AttendImage(layer, Qkv{attn1->Heads(attn1->to_q->forward(n1)),
                                              attn1->Heads(attn1->to_k->forward(n1)),
                                              attn1->Heads(attn1->to_v->forward(n1))});
    if (!a.ok()) return a.status();
    x = x + mod(m[2]) * attn1->out->forward(a->to(x.scalar_type()).flatten(2, 3));
    // Cross-attention: the text keys and values once per call.
    const std::pair<at::Tensor, at::Tensor>* kv = attention.TextKv(layer);
    if (kv == nullptr) {
      if (!h.context.defined()) {
        return absl::FailedPreconditionError("pixart: a block's first call of a run needs the text stream");
      }
      attention.KeepTextKv(layer, attn2->Heads(attn2->to_k->forward(h.context)),
                           attn2->Heads(attn2->to_v->forward(h.context)));
      kv = attention.TextKv(layer);
    }
    auto c = attention.AttendText(attn2->Heads(attn2->to_q->forward(x)), kv->first, kv->second);
    if (!c.ok()) return c.status();
    x = x + attn2->out->forward(c->to(x.scalar_type()).flatten(2, 3));
    const at::Tensor n2 = LayerNorm(x, eps) * (1 + mod(m[4])) + mod(m[3]);
    h.x = x + mod(m[5]) * ff->forward(n2);
    return absl::OkStatus();
  }

  double eps;
  std::shared_ptr<Attention> attn1, attn2;
  std::shared_ptr<FeedForward> ff;
  at::Tensor scale_shift_table;
};

// PixArtAlphaCombinedTimestepSizeEmbeddings: the timestep embedding plus,
// with additional conditions, the resolution and aspect-ratio embeddings
// (dim/3 each per value).
struct CombinedEmbedding : torch::nn::Module {
  CombinedEmbedding(int64_t dim, bool additional, const ParameterSpec& p) {
    timestep_embedder = register_module("timestep_embedder", std::make_shared<TwoLayer>(256, dim, p));
    if (additional) {
      resolution_embedder = register_module("resolution_embedder", std::make_shared<TwoLayer>(256, dim / 3, p));
      aspect_ratio_embedder = register_module("aspect_ratio_embedder", std::make_shared<TwoLayer>(256, dim / 3, p));
    }
  }
  std::shared_ptr<TwoLayer> timestep_embedder, resolution_embedder, aspect_ratio_embedder;
};

// AdaLayerNormSingle: emb, then linear(SiLU(emb)) into six modulations.
struct AdaLnSingle : torch::nn::Module {
  AdaLnSingle(int64_t dim, bool additional, const ParameterSpec& p) {
    emb = register_module("emb", std::make_shared<CombinedEmbedding>(dim, additional, p));
    linear = register_module("linear", std::make_shared<models::Dense>(dim, 6 * dim, p));
  }
  std::shared_ptr<CombinedEmbedding> emb;
  Linear linear{nullptr};
};

// PixArtAlphaTextProjection (act_fn gelu_tanh).
struct CaptionProjection : torch::nn::Module {
  CaptionProjection(int64_t in, int64_t dim, const ParameterSpec& p) {
    linear_1 = register_module("linear_1", std::make_shared<models::Dense>(in, dim, p));
    linear_2 = register_module("linear_2", std::make_shared<models::Dense>(dim, dim, p));
  }
  at::Tensor forward(const at::Tensor& x) const { return linear_2->forward(at::gelu(linear_1->forward(x), "tanh")); }
  Linear linear_1{nullptr}, linear_2{nullptr};
};

struct PosEmbed : torch::nn::Module {
  PosEmbed(const PixArtTransformerConfig& c, const ParameterSpec& p) {
    proj = register_module("proj", std::make_shared<PatchProj>(c.in_channels, c.inner_dim(), p));
  }
  std::shared_ptr<PatchProj> proj;
};

// The modules of one DitPart under their diffusers names.
struct Model : torch::nn::Module {
  Model(const PixArtTransformerConfig& c, const DitPart& part, const ParameterSpec& p) {
    const int64_t dim = c.inner_dim();
    adaln_single = register_module("adaln_single", std::make_shared<AdaLnSingle>(dim, c.use_additional_conditions, p));
    if (part.embedders) {
      pos_embed = register_module("pos_embed", std::make_shared<PosEmbed>(c, p));
      caption_projection =
          register_module("caption_projection", std::make_shared<CaptionProjection>(c.caption_channels, dim, p));
    }
    auto held = std::make_shared<Empty>();
    for (int i = part.first_block; i < part.end_block; ++i) {
      auto block = std::make_shared<Block>(c, p);
      held->register_module(std::to_string(i), block);
      blocks.push_back({i, block});
    }
    if (!blocks.empty()) register_module("transformer_blocks", held);
    if (part.head) {
      scale_shift_table = register_parameter("scale_shift_table", Table({2, dim}, dim, p));
      proj_out = register_module("proj_out", std::make_shared<models::Dense>(dim, 4 * c.out_channels, p));
    }
  }
  std::shared_ptr<AdaLnSingle> adaln_single;
  std::shared_ptr<PosEmbed> pos_embed;
  std::shared_ptr<CaptionProjection> caption_projection;
  std::vector<std::pair<int, std::shared_ptr<Block>>> blocks;  // (global index, block)
  at::Tensor scale_shift_table;
  Linear proj_out{nullptr};
};

}  // namespace

struct PixArtTransformer::Impl {
  PixArtTransformerConfig config;
  DitPart part;
  std::shared_ptr<Model> model;
};

PixArtTransformer::PixArtTransformer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PixArtTransformer::~PixArtTransformer() = default;
torch::nn::Module& PixArtTransformer::module() { return *impl_->model; }
const PixArtTransformerConfig& PixArtTransformer::config() const { return impl_->config; }
const DitPart& PixArtTransformer::part() const { return impl_->part; }
int PixArtTransformer::num_blocks() const { return impl_->config.num_layers; }

absl::StatusOr<std::unique_ptr<PixArtTransformer>> PixArtTransformer::Create(const PixArtTransformerConfig& config,
                                                                             at::ScalarType dtype,
                                                                             const DitPart& part,
                                                                             models::ParameterInit init) {
  if (absl::Status s = ValidatePixArtTransformerConfig(config); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  auto resolved = models::ResolvePart("pixart", part, config.num_layers);
  if (!resolved.ok()) return resolved.status();
  impl->part = *resolved;
  try {
    impl->model = std::make_shared<Model>(config, impl->part, ParameterSpec{init, dtype});
    impl->model->to(dtype);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot build the PixArt transformer: ", e.what()));
  }
  return std::unique_ptr<PixArtTransformer>(new PixArtTransformer(std::move(impl)));
}

at::Tensor PixArtPositionEmbedding(int64_t dim, int64_t rows, int64_t cols, double base_size,
                                   double interpolation_scale) {
  // Positions arange(n) / (n / base_size) / interpolation_scale in float32;
  // frequencies in float64; the column coordinate in the first half.
  const auto axis = [&](int64_t n) {
    return (at::arange(n, at::kFloat) / (static_cast<double>(n) / base_size) / interpolation_scale).to(at::kDouble);
  };
  const at::Tensor omega = 1.0 / at::pow(10000.0, at::arange(dim / 4, at::kDouble) / (dim / 4.0));
  const auto sincos = [&](const at::Tensor& p) {
    const at::Tensor out = at::outer(p.reshape(-1), omega);
    return at::cat({out.sin(), out.cos()}, 1);
  };
  const at::Tensor c = axis(cols).view({1, cols}).expand({rows, cols});
  const at::Tensor r = axis(rows).view({rows, 1}).expand({rows, cols});
  return at::cat({sincos(c), sincos(r)}, 1).to(at::kFloat);
}

absl::StatusOr<at::Tensor> PixArtTransformer::Forward(const at::Tensor& hidden_states,
                                                      const at::Tensor& encoder_hidden_states,
                                                      const at::Tensor& encoder_attention_mask,
                                                      const at::Tensor& timestep, models::DitImageSize size) const {
  const PixArtTransformerConfig& c = impl_->config;
  if (!hidden_states.defined() || hidden_states.dim() != 4 || hidden_states.size(1) != c.in_channels ||
      hidden_states.size(2) % 2 != 0 || hidden_states.size(3) % 2 != 0 || hidden_states.size(2) == 0 ||
      hidden_states.size(3) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pixart: hidden_states must be [B, ", c.in_channels, ", H, W] with H and W even"));
  }
  const int64_t B = hidden_states.size(0), H = hidden_states.size(2), W = hidden_states.size(3);
  if (!encoder_hidden_states.defined() || encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != B ||
      encoder_hidden_states.size(2) != c.caption_channels) {
    return absl::InvalidArgumentError(
        absl::StrCat("pixart: encoder_hidden_states must be [", B, ", T, ", c.caption_channels, "]"));
  }
  const int64_t T = encoder_hidden_states.size(1);
  if (encoder_attention_mask.defined() && !encoder_attention_mask.sizes().equals({B, T})) {
    return absl::InvalidArgumentError(absl::StrCat("pixart: encoder_attention_mask must be [", B, ", ", T, "]"));
  }
  if (!timestep.defined() || timestep.numel() != B) {
    return absl::InvalidArgumentError(absl::StrCat("pixart: timestep must hold ", B, " values"));
  }
  if (c.use_additional_conditions && (size.height <= 0 || size.width <= 0)) {
    return absl::InvalidArgumentError("pixart: this model's micro-conditions need the image size");
  }
  const DitPart& part = impl_->part;
  if (!part.embedders || !part.head || part.first_block != 0 || part.end_block != num_blocks()) {
    return absl::FailedPreconditionError("pixart: Forward needs the whole model; this one holds a part");
  }
  const int64_t C = c.in_channels, rows = H / 2, cols = W / 2, S = rows * cols;
  const at::Tensor latents =
      hidden_states.reshape({B, C, rows, 2, cols, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({B, S, 4 * C});
  const DitConditioning conditioning = Condition(TimeEmbedding(timestep.reshape({B}), at::Tensor(), at::Tensor(), size));
  const DitPositions positions = Positions(T, rows, cols, 0, S, hidden_states.device());
  DitHidden hidden = Embed(latents, encoder_hidden_states, positions);
  models::SerialJointAttention attention;
  if (encoder_attention_mask.defined()) attention.set_text_mask(encoder_attention_mask.gt(0.5));
  if (absl::Status s = RunBlocks(hidden, conditioning, positions, attention); !s.ok()) return s;
  const int64_t O = c.out_channels;
  return HeadAll(hidden.x, conditioning)
      .reshape({B, rows, cols, 2, 2, O})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({B, O, H, W});
}

at::Tensor PixArtTransformer::TimeEmbedding(const at::Tensor& time, const at::Tensor& /*guidance*/,
                                            const at::Tensor& /*pooled*/, models::DitImageSize size) const {
  Model& m = *impl_->model;
  CombinedEmbedding& e = *m.adaln_single->emb;
  const auto dtype = e.timestep_embedder->linear_1->weight.scalar_type();
  const int64_t B = time.size(0);
  at::Tensor temb = e.timestep_embedder->forward(models::TimestepSinusoid256(time).to(dtype));
  if (e.resolution_embedder) {
    // PixArtAlphaPipeline: resolution (height, width) and aspect ratio h/w
    // of the image, each value embedded as a timestep.
    const at::Tensor resolution = at::tensor({static_cast<float>(size.height), static_cast<float>(size.width)})
                                      .to(time.device())
                                      .repeat({B});
    const at::Tensor ratio =
        at::full({B}, static_cast<float>(static_cast<double>(size.height) / static_cast<double>(size.width)),
                 time.options().dtype(at::kFloat));
    const at::Tensor r = e.resolution_embedder->forward(models::TimestepSinusoid256(resolution).to(dtype)).reshape({B, -1});
    const at::Tensor a = e.aspect_ratio_embedder->forward(models::TimestepSinusoid256(ratio).to(dtype)).reshape({B, -1});
    temb = temb + at::cat({r, a}, 1);
  }
  return temb;
}

DitConditioning PixArtTransformer::Condition(const at::Tensor& temb) const {
  Model& m = *impl_->model;
  DitConditioning c;
  const int64_t B = temb.size(0), D = hidden_size();
  const at::Tensor t6 = m.adaln_single->linear->forward(at::silu(temb)).view({B, 6, D});
  for (auto& [index, block] : m.blocks) {
    c.blocks.push_back((block->scale_shift_table.unsqueeze(0) + t6).reshape({B, 6 * D}));
    c.blocks_context.push_back(at::Tensor());
  }
  if (m.proj_out) c.head = (m.scale_shift_table.unsqueeze(0) + temb.unsqueeze(1)).reshape({B, 2 * D});
  return c;
}

DitPositions PixArtTransformer::Positions(int64_t /*text_tokens*/, int64_t rows, int64_t cols, int64_t image_begin,
                                          int64_t image_end, c10::Device device) const {
  DitPositions p;
  const Model& m = *impl_->model;
  if (!m.pos_embed) return p;
  const PixArtTransformerConfig& c = impl_->config;
  p.image_embedding = PixArtPositionEmbedding(c.inner_dim(), rows, cols, c.base_size(), c.interpolation_scale)
                          .narrow(0, image_begin, image_end - image_begin)
                          .to(device);
  return p;
}

DitHidden PixArtTransformer::Embed(const at::Tensor& latents, const at::Tensor& text, const DitPositions& positions,
                                   const at::Tensor& /*text_mask: applied in cross-attention*/) const {
  Model& m = *impl_->model;
  const auto dtype = m.pos_embed->proj->weight.scalar_type();
  DitHidden h;
  h.x = (m.pos_embed->proj->forward(latents.to(dtype)) + positions.image_embedding.unsqueeze(0)).to(dtype);
  if (text.defined()) h.context = m.caption_projection->forward(text.to(dtype));
  return h;
}

absl::Status PixArtTransformer::RunBlockSpan(DitHidden& hidden, const DitConditioning& conditioning,
                                             const DitPositions& /*positions: added at Embed*/,
                                             JointAttention& attention, BlockSpan span) const {
  Model& m = *impl_->model;
  const int held = static_cast<int>(m.blocks.size());
  auto span_end = models::HeldSpanEnd("pixart", conditioning, held, span);
  if (!span_end.ok()) return span_end.status();
  const int end = *span_end;
  for (int i = span.begin; i < end; ++i) {
    const auto& [index, block] = m.blocks[i];
    if (absl::Status s = block->Forward(index, hidden, conditioning.blocks[i], attention); !s.ok()) return s;
  }
  return absl::OkStatus();
}

at::Tensor PixArtTransformer::FirstBlockModulatedInput(const DitHidden& hidden,
                                                       const DitConditioning& conditioning) const {
  const auto m = conditioning.blocks.front().chunk(6, 1);
  return LayerNorm(hidden.x, impl_->config.norm_eps) * (1 + m[1].unsqueeze(1)) + m[0].unsqueeze(1);
}

at::Tensor PixArtTransformer::HeadAll(const at::Tensor& x, const DitConditioning& conditioning) const {
  Model& m = *impl_->model;
  const auto shift_scale = conditioning.head.chunk(2, 1);  // shift first, then scale
  const at::Tensor n = at::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6) * (1 + shift_scale[1].unsqueeze(1)) +
                       shift_scale[0].unsqueeze(1);
  return m.proj_out->forward(n);
}

at::Tensor PixArtTransformer::Head(const at::Tensor& x, const DitConditioning& conditioning) const {
  const at::Tensor out = HeadAll(x, conditioning);
  // (dy, dx, channel) → the packed (channel, dy, dx), the prediction
  // channels only.
  const int64_t B = out.size(0), S = out.size(1), O = impl_->config.out_channels, C = impl_->config.in_channels;
  return out.view({B, S, 2, 2, O}).narrow(4, 0, C).permute({0, 1, 4, 2, 3}).reshape({B, S, 4 * C});
}

}  // namespace ditserve::worker::pixart
