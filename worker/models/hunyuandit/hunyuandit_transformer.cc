#include "worker/models/hunyuandit/hunyuandit_transformer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/long_skips.h"
#include "worker/models/common/dense.h"
#include "worker/models/common/dit_blocks.h"

namespace ditserve::worker::hunyuandit {
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
using Linear = std::shared_ptr<models::Dense>;
using torch::nn::ModuleList;

constexpr double kEps = 1e-6;  // every norm of the model

// A tensor of `sizes` drawn as torch.randn(sizes) · scale when
// initialising (diffusers' nn.Parameter(torch.randn(...))), else left for
// the load.
at::Tensor Randn(at::IntArrayRef sizes, double scale, const ParameterSpec& p) {
  if (p.init != models::ParameterInit::kTorchDefault) return at::empty(sizes, at::TensorOptions().dtype(p.dtype));
  return at::randn(sizes, at::kFloat) * scale;
}

// nn.LayerNorm / diffusers' FP32LayerNorm with affine parameters: computed
// in float32, returned in x's dtype.
struct AffineNorm : torch::nn::Module {
  AffineNorm(int64_t dim, const ParameterSpec& p) {
    weight = register_parameter("weight", p.Filled({dim}, 1.0));
    bias = register_parameter("bias", p.Filled({dim}, 0.0));
  }
  at::Tensor forward(const at::Tensor& x) const {
    return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, weight.to(at::kFloat), bias.to(at::kFloat), kEps)
        .to(x.scalar_type());
  }
  at::Tensor weight, bias;
};

// PixArtAlphaTextProjection with act_fn silu_fp32: linear_1, SiLU, linear_2.
struct Projection : torch::nn::Module {
  Projection(int64_t in, int64_t hidden, int64_t out, const ParameterSpec& p) {
    linear_1 = register_module("linear_1", std::make_shared<models::Dense>(in, hidden, p));
    linear_2 = register_module("linear_2", std::make_shared<models::Dense>(hidden, out, p));
  }
  at::Tensor forward(const at::Tensor& x) const {
    const at::Tensor h = linear_1->forward(x);
    return linear_2->forward(at::silu(h.to(at::kFloat)).to(h.scalar_type()));
  }
  Linear linear_1{nullptr}, linear_2{nullptr};
};

// diffusers' Attention with qk_norm "layer_norm" (HunyuanAttnProcessor2_0):
// to_q, to_k, to_v, to_out.0 (all biased), norm_q / norm_k LayerNorms over
// the head width. `kv_dim`: the width of the keys' source.
struct Attention : torch::nn::Module {
  Attention(int64_t dim, int64_t kv_dim, int64_t heads, int64_t head_dim, const ParameterSpec& p)
      : heads(heads), head_dim(head_dim) {
    to_q = register_module("to_q", std::make_shared<models::Dense>(dim, dim, p));
    to_k = register_module("to_k", std::make_shared<models::Dense>(kv_dim, dim, p));
    to_v = register_module("to_v", std::make_shared<models::Dense>(kv_dim, dim, p));
    norm_q = register_module("norm_q", std::make_shared<AffineNorm>(head_dim, p));
    norm_k = register_module("norm_k", std::make_shared<AffineNorm>(head_dim, p));
    to_out = register_module("to_out", ModuleList());
    out = std::make_shared<models::Dense>(dim, dim, p);
    to_out->push_back(out);  // to_out.1 is a dropout
  }
  at::Tensor Heads(const at::Tensor& x) const { return x.unflatten(-1, {heads, head_dim}); }
  int64_t heads, head_dim;
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out{nullptr};
  std::shared_ptr<AffineNorm> norm_q, norm_k;
  ModuleList to_out{nullptr};
};

// AdaLayerNormShift: norm(x) + linear(SiLU(temb)) (the shift comes from
// Condition).
struct ShiftNorm : torch::nn::Module {
  ShiftNorm(int64_t dim, const ParameterSpec& p) {
    linear = register_module("linear", std::make_shared<models::Dense>(dim, dim, p));
    norm = register_module("norm", std::make_shared<AffineNorm>(dim, p));
  }
  Linear linear{nullptr};
  std::shared_ptr<AffineNorm> norm;
};

// HunyuanDiTBlock: the optional long skip, then self-attention, cross-
// attention and the feed-forward, each pre-normed with a residual.
struct Block : torch::nn::Module {
  Block(const HunyuanDiTConfig& c, bool skip, const ParameterSpec& p) {
    const int64_t dim = c.inner_dim();
    norm1 = register_module("norm1", std::make_shared<ShiftNorm>(dim, p));
    attn1 = register_module("attn1",
                            std::make_shared<Attention>(dim, dim, c.num_attention_heads, c.attention_head_dim, p));
    norm2 = register_module("norm2", std::make_shared<AffineNorm>(dim, p));
    attn2 = register_module("attn2", std::make_shared<Attention>(dim, c.cross_attention_dim, c.num_attention_heads,
                                                                 c.attention_head_dim, p));
    norm3 = register_module("norm3", std::make_shared<AffineNorm>(dim, p));
    ff = register_module("ff", std::make_shared<FeedForward>(dim, p, c.ff_inner_dim()));
    if (skip) {
      skip_norm = register_module("skip_norm", std::make_shared<AffineNorm>(2 * dim, p));
      skip_linear = register_module("skip_linear", std::make_shared<models::Dense>(2 * dim, dim, p));
    }
  }

  // `shift` [B, dim]: norm1's; `skip` defined exactly for skip blocks.
  absl::Status Forward(int layer, DitHidden& h, const at::Tensor& shift, const at::Tensor& skip,
                       const DitPositions& positions, JointAttention& attention) {
    at::Tensor x = h.x;
    if (skip_linear) x = skip_linear->forward(skip_norm->forward(at::cat({x, skip}, -1)));
    const auto rope = [&](const at::Tensor& t) { return models::ApplyRope(t, positions.image_cos, positions.image_sin); };
    const at::Tensor n1 = norm1->norm->forward(x) + shift.unsqueeze(1);
    auto a = attention.AttendImage(
        layer, Qkv{rope(attn1->norm_q->forward(attn1->Heads(attn1->to_q->forward(n1)))),
                   rope(attn1->norm_k->forward(attn1->Heads(attn1->to_k->forward(n1)))),
                   attn1->Heads(attn1->to_v->forward(n1))});
    if (!a.ok()) return a.status();
    x = x + attn1->out->forward(a->to(x.scalar_type()).flatten(2, 3));
    // Cross-attention: the text keys and values once per call; no mask
    // (the padding holds text_embedding_padding), so every rank computes it
    // alone over the whole text.
    const std::pair<at::Tensor, at::Tensor>* kv = attention.TextKv(layer);
    if (kv == nullptr) {
      if (!h.context.defined()) {
        return absl::FailedPreconditionError("hunyuandit: a block's first call of a run needs the text stream");
      }
      attention.KeepTextKv(layer, attn2->norm_k->forward(attn2->Heads(attn2->to_k->forward(h.context))),
                           attn2->Heads(attn2->to_v->forward(h.context)));
      kv = attention.TextKv(layer);
    }
    const at::Tensor q2 = rope(attn2->norm_q->forward(attn2->Heads(attn2->to_q->forward(norm2->forward(x)))));
    auto c = models::SerialAttention(q2, kv->first, kv->second);
    if (!c.ok()) return c.status();
    x = x + attn2->out->forward(c->to(x.scalar_type()).flatten(2, 3));
    h.x = x + ff->forward(norm3->forward(x));
    return absl::OkStatus();
  }

  std::shared_ptr<ShiftNorm> norm1;
  std::shared_ptr<Attention> attn1, attn2;
  std::shared_ptr<AffineNorm> norm2, norm3, skip_norm;
  std::shared_ptr<FeedForward> ff;
  Linear skip_linear{nullptr};
};

// HunyuanDiTAttentionPool: one query (the mean token) attends, with 8
// heads, over the mean and the tokens, positions added; c_proj out.
struct AttentionPool : torch::nn::Module {
  AttentionPool(int64_t tokens, int64_t dim, int64_t out_dim, const ParameterSpec& p) {
    positional_embedding =
        register_parameter("positional_embedding", Randn({tokens + 1, dim}, 1.0 / std::sqrt(static_cast<double>(dim)), p));
    k_proj = register_module("k_proj", std::make_shared<models::Dense>(dim, dim, p));
    q_proj = register_module("q_proj", std::make_shared<models::Dense>(dim, dim, p));
    v_proj = register_module("v_proj", std::make_shared<models::Dense>(dim, dim, p));
    c_proj = register_module("c_proj", std::make_shared<models::Dense>(dim, out_dim, p));
  }
  // x [B, L, dim] → [B, out_dim].
  at::Tensor forward(const at::Tensor& x) const {
    constexpr int64_t kHeads = 8;
    const at::Tensor all = at::cat({x.mean(1, /*keepdim=*/true), x}, 1) + positional_embedding.unsqueeze(0).to(x.scalar_type());
    const auto heads = [&](const at::Tensor& t) { return t.unflatten(-1, {kHeads, t.size(-1) / kHeads}); };
    const at::Tensor q = heads(q_proj->forward(all.narrow(1, 0, 1)));
    auto o = models::SerialAttention(q, heads(k_proj->forward(all)), heads(v_proj->forward(all)));
    return c_proj->forward(o->to(x.scalar_type()).flatten(2, 3)).squeeze(1);
  }
  at::Tensor positional_embedding;
  Linear k_proj{nullptr}, q_proj{nullptr}, v_proj{nullptr}, c_proj{nullptr};
};

// HunyuanCombinedTimestepTextSizeStyleEmbedding.
struct TimeExtraEmbedding : torch::nn::Module {
  TimeExtraEmbedding(const HunyuanDiTConfig& c, const ParameterSpec& p) {
    const int64_t dim = c.inner_dim();
    timestep_embedder = register_module("timestep_embedder", std::make_shared<models::TwoLayer>(256, dim, p));
    pooler = register_module(
        "pooler", std::make_shared<AttentionPool>(c.text_len_t5, c.cross_attention_dim_t5, c.pooled_projection_dim, p));
    int64_t extra = c.pooled_projection_dim;
    if (c.use_style_cond_and_image_meta_size) {
      auto style = std::make_shared<Empty>();
      style_weight = style->register_parameter("weight", Randn({1, dim}, 1.0, p));  // nn.Embedding(1, dim)
      register_module("style_embedder", style);
      extra += 256 * 6 + dim;
    }
    extra_embedder = register_module("extra_embedder", std::make_shared<Projection>(extra, 4 * dim, dim, p));
  }
  std::shared_ptr<models::TwoLayer> timestep_embedder;
  std::shared_ptr<AttentionPool> pooler;
  std::shared_ptr<Projection> extra_embedder;
  at::Tensor style_weight;  // undefined without the style condition
};

struct PosEmbed : torch::nn::Module {
  PosEmbed(const HunyuanDiTConfig& c, const ParameterSpec& p) {
    proj = register_module("proj", std::make_shared<PatchProj>(c.in_channels, c.inner_dim(), p));
  }
  std::shared_ptr<PatchProj> proj;
};

// AdaLayerNormContinuous (no affine): linear(SiLU(temb)) → scale, shift.
struct NormOut : torch::nn::Module {
  NormOut(int64_t dim, const ParameterSpec& p) {
    linear = register_module("linear", std::make_shared<models::Dense>(dim, 2 * dim, p));
  }
  Linear linear{nullptr};
};

// The modules of one DitPart under their diffusers names. Every part holds
// the conditioning embedders (every stage conditions its blocks).
struct Model : torch::nn::Module {
  Model(const HunyuanDiTConfig& c, const DitPart& part, const ParameterSpec& p) {
    const int64_t dim = c.inner_dim();
    time_extra_emb = register_module("time_extra_emb", std::make_shared<TimeExtraEmbedding>(c, p));
    if (part.embedders) {
      text_embedder = register_module(
          "text_embedder",
          std::make_shared<Projection>(c.cross_attention_dim_t5, 4 * c.cross_attention_dim_t5, c.cross_attention_dim, p));
      text_embedding_padding =
          register_parameter("text_embedding_padding", Randn({c.text_tokens(), c.cross_attention_dim}, 1.0, p));
      pos_embed = register_module("pos_embed", std::make_shared<PosEmbed>(c, p));
    }
    auto held = std::make_shared<Empty>();
    for (int i = part.first_block; i < part.end_block; ++i) {
      auto block = std::make_shared<Block>(c, i > c.num_layers / 2, p);
      held->register_module(std::to_string(i), block);
      blocks.push_back({i, block});
    }
    if (!blocks.empty()) register_module("blocks", held);
    if (part.head) {
      norm_out = register_module("norm_out", std::make_shared<NormOut>(dim, p));
      proj_out = register_module("proj_out", std::make_shared<models::Dense>(dim, 4 * c.out_channels(), p));
    }
  }
  std::shared_ptr<TimeExtraEmbedding> time_extra_emb;
  std::shared_ptr<Projection> text_embedder;
  at::Tensor text_embedding_padding;
  std::shared_ptr<PosEmbed> pos_embed;
  std::vector<std::pair<int, std::shared_ptr<Block>>> blocks;  // (global index, block)
  std::shared_ptr<NormOut> norm_out;
  Linear proj_out{nullptr};
};

}  // namespace

struct HunyuanDiTTransformer::Impl {
  HunyuanDiTConfig config;
  DitPart part;
  std::shared_ptr<Model> model;
};

HunyuanDiTTransformer::HunyuanDiTTransformer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HunyuanDiTTransformer::~HunyuanDiTTransformer() = default;
torch::nn::Module& HunyuanDiTTransformer::module() { return *impl_->model; }
const HunyuanDiTConfig& HunyuanDiTTransformer::config() const { return impl_->config; }
const DitPart& HunyuanDiTTransformer::part() const { return impl_->part; }
int HunyuanDiTTransformer::num_blocks() const { return impl_->config.num_layers; }

absl::StatusOr<std::unique_ptr<HunyuanDiTTransformer>> HunyuanDiTTransformer::Create(const HunyuanDiTConfig& config,
                                                                                     at::ScalarType dtype,
                                                                                     const DitPart& part,
                                                                                     models::ParameterInit init) {
  if (absl::Status s = ValidateHunyuanDiTConfig(config); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  auto resolved = models::ResolvePart("hunyuandit", part, config.num_layers);
  if (!resolved.ok()) return resolved.status();
  impl->part = *resolved;
  try {
    impl->model = std::make_shared<Model>(config, impl->part, ParameterSpec{init, dtype});
    impl->model->to(dtype);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot build the HunyuanDiT transformer: ", e.what()));
  }
  return std::unique_ptr<HunyuanDiTTransformer>(new HunyuanDiTTransformer(std::move(impl)));
}

int64_t HunyuanTextDim(const HunyuanDiTConfig& c) { return std::max(c.cross_attention_dim, c.cross_attention_dim_t5); }

at::Tensor HunyuanTextSequence(const HunyuanDiTConfig& c, const at::Tensor& bert, const at::Tensor& t5) {
  const int64_t width = HunyuanTextDim(c);
  const auto widen = [&](const at::Tensor& t) {
    return t.size(-1) == width ? t : at::constant_pad_nd(t, {0, width - t.size(-1)});
  };
  return at::cat({widen(bert), widen(t5)}, 1);
}

std::pair<at::Tensor, at::Tensor> HunyuanRope(int64_t head_dim, int64_t rows, int64_t cols) {
  // get_resize_crop_region_for_grid((rows, cols), 32): Python's round is
  // half to even, as nearbyint in the default rounding mode.
  constexpr double kBase = 32;  // 512 px / 8 (VAE) / 2 (patch)
  const double h = static_cast<double>(rows), w = static_cast<double>(cols);
  double resize_h, resize_w;
  if (h / w > 1) {
    resize_h = kBase;
    resize_w = std::nearbyint(kBase / h * w);
  } else {
    resize_w = kBase;
    resize_h = std::nearbyint(kBase / w * h);
  }
  const double top = std::nearbyint((kBase - resize_h) / 2.0), left = std::nearbyint((kBase - resize_w) / 2.0);
  const double bottom = top + resize_h, right = left + resize_w;
  // get_2d_rotary_pos_embed: linspace(start, stop·(n−1)/n, n) per axis in
  // float32; the first half of the channels encodes the column, the second
  // the row (diffusers' meshgrid order).
  const at::Tensor grid_h = at::linspace(top, bottom * (h - 1) / h, rows, at::kFloat);
  const at::Tensor grid_w = at::linspace(left, right * (w - 1) / w, cols, at::kFloat);
  const int64_t dim = head_dim / 2;
  const at::Tensor freqs = at::reciprocal(at::pow(10000.0, at::arange(0, dim, 2, at::kFloat) / static_cast<double>(dim)));
  const auto axis = [&](const at::Tensor& pos) {
    const at::Tensor f = at::outer(pos, freqs);
    return std::pair{f.cos().repeat_interleave(2, 1), f.sin().repeat_interleave(2, 1)};
  };
  const auto [col_cos, col_sin] = axis(grid_w.view({1, cols}).expand({rows, cols}).reshape(-1));
  const auto [row_cos, row_sin] = axis(grid_h.view({rows, 1}).expand({rows, cols}).reshape(-1));
  return {at::cat({col_cos, row_cos}, 1), at::cat({col_sin, row_sin}, 1)};
}

absl::StatusOr<at::Tensor> HunyuanDiTTransformer::Forward(const at::Tensor& hidden_states, const at::Tensor& timestep,
                                                          const at::Tensor& encoder_hidden_states,
                                                          const at::Tensor& text_embedding_mask,
                                                          const at::Tensor& encoder_hidden_states_t5,
                                                          const at::Tensor& text_embedding_mask_t5,
                                                          models::DitImageSize size) const {
  const HunyuanDiTConfig& c = impl_->config;
  if (!hidden_states.defined() || hidden_states.dim() != 4 || hidden_states.size(1) != c.in_channels ||
      hidden_states.size(2) % 2 != 0 || hidden_states.size(3) % 2 != 0 || hidden_states.size(2) == 0 ||
      hidden_states.size(3) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("hunyuandit: hidden_states must be [B, ", c.in_channels, ", H, W] with H and W even"));
  }
  const int64_t B = hidden_states.size(0), H = hidden_states.size(2), W = hidden_states.size(3);
  const auto check = [&](const at::Tensor& t, std::vector<int64_t> sizes, const char* name) -> absl::Status {
    if (t.defined() && t.sizes().equals(sizes)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("hunyuandit: ", name, " must be [", absl::StrJoin(sizes, ", "), "]"));
  };
  if (absl::Status s = check(encoder_hidden_states, {B, c.text_len, c.cross_attention_dim}, "encoder_hidden_states");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = check(text_embedding_mask, {B, c.text_len}, "text_embedding_mask"); !s.ok()) return s;
  if (absl::Status s = check(encoder_hidden_states_t5, {B, c.text_len_t5, c.cross_attention_dim_t5},
                             "encoder_hidden_states_t5");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = check(text_embedding_mask_t5, {B, c.text_len_t5}, "text_embedding_mask_t5"); !s.ok()) return s;
  if (absl::Status s = check(timestep, {B}, "timestep"); !s.ok()) return s;
  const DitPart& part = impl_->part;
  if (!part.embedders || !part.head || part.first_block != 0 || part.end_block != num_blocks()) {
    return absl::FailedPreconditionError("hunyuandit: Forward needs the whole model; this one holds a part");
  }
  if (size.height <= 0 || size.width <= 0) size = {8 * H, 8 * W};
  const int64_t C = c.in_channels, rows = H / 2, cols = W / 2, S = rows * cols;
  const at::Tensor latents =
      hidden_states.reshape({B, C, rows, 2, cols, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({B, S, 4 * C});
  const at::Tensor text = HunyuanTextSequence(c, encoder_hidden_states, encoder_hidden_states_t5);
  const at::Tensor mask = at::cat({text_embedding_mask, text_embedding_mask_t5}, 1);
  const DitConditioning conditioning = Condition(TimeEmbedding(timestep, at::Tensor(), PooledText(text), size));
  const DitPositions positions = Positions(c.text_tokens(), rows, cols, 0, S, hidden_states.device());
  DitHidden hidden = Embed(latents, text, positions, mask);
  models::SerialJointAttention attention;
  if (absl::Status s = RunBlocks(hidden, conditioning, positions, attention); !s.ok()) return s;
  const int64_t O = c.out_channels();
  return HeadAll(hidden.x, conditioning)
      .reshape({B, rows, cols, 2, 2, O})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({B, O, H, W});
}

at::Tensor HunyuanDiTTransformer::PooledText(const at::Tensor& sequence) const {
  const HunyuanDiTConfig& c = impl_->config;
  TimeExtraEmbedding& e = *impl_->model->time_extra_emb;
  const auto dtype = e.pooler->q_proj->weight.scalar_type();
  // The raw mT5 states, padding included (diffusers pools them unmasked).
  const at::Tensor t5 = sequence.narrow(1, c.text_len, c.text_len_t5).narrow(2, 0, c.cross_attention_dim_t5);
  return e.pooler->forward(t5.to(dtype));
}

at::Tensor HunyuanDiTTransformer::TimeEmbedding(const at::Tensor& time, const at::Tensor& /*guidance*/,
                                                const at::Tensor& pooled, models::DitImageSize size) const {
  TimeExtraEmbedding& e = *impl_->model->time_extra_emb;
  const auto dtype = e.timestep_embedder->linear_1->weight.scalar_type();
  const int64_t B = time.size(0);
  // HunyuanDiTPipeline hands the transformer the timestep in the latents'
  // dtype (bf16 rounds 981 to 980).
  const at::Tensor temb = e.timestep_embedder->forward(models::TimestepSinusoid256(time.to(dtype).to(at::kFloat)).to(dtype));
  at::Tensor extra = pooled.to(dtype);
  if (e.style_weight.defined()) {
    // HunyuanDiTPipeline: original size 1024×1024, the target size, crop
    // (0, 0), each embedded as a timestep; style 0.
    const at::Tensor meta = at::tensor({1024.0f, 1024.0f, static_cast<float>(size.height),
                                        static_cast<float>(size.width), 0.0f, 0.0f})
                                .to(time.device())
                                .repeat({B});
    const at::Tensor meta_emb = models::TimestepSinusoid256(meta).to(dtype).reshape({B, 6 * 256});
    extra = at::cat({extra, meta_emb, e.style_weight.narrow(0, 0, 1).expand({B, -1})}, 1);
  }
  return temb + e.extra_embedder->forward(extra);
}

DitConditioning HunyuanDiTTransformer::Condition(const at::Tensor& temb) const {
  Model& m = *impl_->model;
  DitConditioning c;
  const at::Tensor act = at::silu(temb);
  for (auto& [index, block] : m.blocks) {
    c.blocks.push_back(block->norm1->linear->forward(act));
    c.blocks_context.push_back(at::Tensor());
  }
  if (m.norm_out) c.head = m.norm_out->linear->forward(act);
  return c;
}

DitPositions HunyuanDiTTransformer::Positions(int64_t /*text_tokens*/, int64_t rows, int64_t cols,
                                              int64_t image_begin, int64_t image_end, c10::Device device) const {
  DitPositions p;
  if (impl_->model->blocks.empty()) return p;
  auto [cos, sin] = HunyuanRope(impl_->config.attention_head_dim, rows, cols);
  p.image_cos = cos.narrow(0, image_begin, image_end - image_begin).to(device);
  p.image_sin = sin.narrow(0, image_begin, image_end - image_begin).to(device);
  return p;
}

DitHidden HunyuanDiTTransformer::Embed(const at::Tensor& latents, const at::Tensor& text,
                                       const DitPositions& /*positions: RoPE, applied in the blocks*/,
                                       const at::Tensor& text_mask) const {
  const HunyuanDiTConfig& c = impl_->config;
  Model& m = *impl_->model;
  const auto dtype = m.pos_embed->proj->weight.scalar_type();
  DitHidden h;
  h.x = m.pos_embed->proj->forward(latents.to(dtype));
  if (text.defined()) {
    const at::Tensor t = text.to(dtype);
    const at::Tensor bert = t.narrow(1, 0, c.text_len).narrow(2, 0, c.cross_attention_dim);
    const at::Tensor t5 = m.text_embedder->forward(t.narrow(1, c.text_len, c.text_len_t5).narrow(2, 0, c.cross_attention_dim_t5));
    h.context = at::cat({bert, t5}, 1);
    if (text_mask.defined()) {
      h.context = at::where(text_mask.gt(0.5).unsqueeze(2), h.context, m.text_embedding_padding.unsqueeze(0));
    }
  }
  return h;
}

int HunyuanDiTTransformer::SkipsBefore(int block) const {
  return core::LongSkipsBefore(impl_->config.num_layers, block);
}

absl::Status HunyuanDiTTransformer::RunBlockSpan(DitHidden& hidden, const DitConditioning& conditioning,
                                                 const DitPositions& positions, JointAttention& attention,
                                                 BlockSpan span) const {
  Model& m = *impl_->model;
  const int held = static_cast<int>(m.blocks.size());
  auto span_end = models::HeldSpanEnd("hunyuandit", conditioning, held, span);
  if (!span_end.ok()) return span_end.status();
  const int half = impl_->config.num_layers / 2;
  for (int i = span.begin; i < *span_end; ++i) {
    const auto& [index, block] = m.blocks[i];
    if (hidden.skips.size() != static_cast<size_t>(SkipsBefore(index))) {
      return absl::FailedPreconditionError(absl::StrCat("hunyuandit: block ", index, " needs ", SkipsBefore(index),
                                                        " long-skip activations, the hidden states hold ",
                                                        hidden.skips.size()));
    }
    at::Tensor skip;
    if (index > half) {
      skip = std::move(hidden.skips.back());
      hidden.skips.pop_back();
    }
    if (absl::Status s = block->Forward(index, hidden, conditioning.blocks[i], skip, positions, attention); !s.ok()) {
      return s;
    }
    if (index < half - 1) hidden.skips.push_back(hidden.x);
  }
  return absl::OkStatus();
}

at::Tensor HunyuanDiTTransformer::FirstBlockModulatedInput(const DitHidden& hidden,
                                                           const DitConditioning& conditioning) const {
  return impl_->model->blocks.front().second->norm1->norm->forward(hidden.x) + conditioning.blocks.front().unsqueeze(1);
}

at::Tensor HunyuanDiTTransformer::HeadAll(const at::Tensor& x, const DitConditioning& conditioning) const {
  Model& m = *impl_->model;
  const auto scale_shift = conditioning.head.chunk(2, 1);  // scale first, then shift
  const at::Tensor n = at::layer_norm(x, {x.size(-1)}, {}, {}, kEps) * (1 + scale_shift[0].unsqueeze(1)) +
                       scale_shift[1].unsqueeze(1);
  return m.proj_out->forward(n);
}

at::Tensor HunyuanDiTTransformer::Head(const at::Tensor& x, const DitConditioning& conditioning) const {
  const at::Tensor out = HeadAll(x, conditioning);
  // (dy, dx, channel) → the packed (channel, dy, dx), the prediction
  // channels only.
  const int64_t B = out.size(0), S = out.size(1), O = impl_->config.out_channels(), C = impl_->config.in_channels;
  return out.view({B, S, 2, 2, O}).narrow(4, 0, C).permute({0, 1, 4, 2, 3}).reshape({B, S, 4 * C});
}

}  // namespace ditserve::worker::hunyuandit
