#include "worker/models/sd3/sd3_transformer.h"

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

namespace ditserve::worker::sd3 {
namespace {

using models::AdaNorm;
using models::DitConditioning;
using models::DitHidden;
using models::DitPart;
using models::DitPositions;
using models::Empty;
using models::FeedForward;
using models::JointAttention;
using models::Modulate;
using models::ParameterSpec;
using models::PatchProj;
using models::Qkv;
using models::RmsNorm;
using models::TwoLayer;
using Linear = std::shared_ptr<models::Dense>;
using torch::nn::ModuleList;

// diffusers' CombinedTimestepTextProjEmbeddings: TimestepEmbedding and
// PixArtAlphaTextProjection (act_fn silu) share TwoLayer's names.
struct TimeTextEmbed : torch::nn::Module {
  TimeTextEmbed(int64_t dim, int64_t pooled_dim, const ParameterSpec& p) {
    timestep_embedder = register_module("timestep_embedder", std::make_shared<TwoLayer>(256, dim, p));
    text_embedder = register_module("text_embedder", std::make_shared<TwoLayer>(pooled_dim, dim, p));
  }
  // `timestep` float [B] in 0…1000; `pooled` in the run dtype.
  at::Tensor forward(const at::Tensor& timestep, const at::Tensor& pooled) {
    const at::Tensor proj = models::TimestepSinusoid256(timestep).to(pooled.scalar_type());
    return timestep_embedder->forward(proj) + text_embedder->forward(pooled);
  }
  std::shared_ptr<TwoLayer> timestep_embedder, text_embedder;
};

// PatchEmbed: proj and the persistent buffer pos_embed [1, M·M, dim]
// (M = pos_embed_max_size), which diffusers saves in the checkpoint.
struct PosEmbed : torch::nn::Module {
  PosEmbed(const Sd3TransformerConfig& c, const ParameterSpec& p) {
    proj = register_module("proj", std::make_shared<PatchProj>(c.in_channels, c.inner_dim(), p));
    // PatchEmbed(height = sample_size): base_size = sample_size // patch_size.
    const double base_size = static_cast<double>(c.sample_size / c.patch_size);
    pos_embed = register_buffer("pos_embed",
                                Sd3PositionEmbedding(c.inner_dim(), c.pos_embed_max_size, base_size).unsqueeze(0));
  }
  std::shared_ptr<PatchProj> proj;
  at::Tensor pos_embed;
};

// diffusers' Attention with JointAttnProcessor2_0 (bias everywhere, qk_norm
// RMSNorm(head_dim, eps 1e-6)). `joint`: the add_* projections of the text
// stream; `context_out`: to_add_out (absent in the last block).
struct Attention : torch::nn::Module {
  Attention(int64_t dim, int64_t heads, int64_t head_dim, bool qk_norm, bool joint, bool context_out,
            const ParameterSpec& p)
      : heads(heads), head_dim(head_dim) {
    to_q = register_module("to_q", std::make_shared<models::Dense>(dim, dim, p));
    to_k = register_module("to_k", std::make_shared<models::Dense>(dim, dim, p));
    to_v = register_module("to_v", std::make_shared<models::Dense>(dim, dim, p));
    if (qk_norm) {
      norm_q = register_module("norm_q", std::make_shared<RmsNorm>(head_dim, p));
      norm_k = register_module("norm_k", std::make_shared<RmsNorm>(head_dim, p));
    }
    to_out = register_module("to_out", ModuleList());
    out = std::make_shared<models::Dense>(dim, dim, p);
    to_out->push_back(out);  // to_out.1 is a dropout
    if (joint) {
      add_q_proj = register_module("add_q_proj", std::make_shared<models::Dense>(dim, dim, p));
      add_k_proj = register_module("add_k_proj", std::make_shared<models::Dense>(dim, dim, p));
      add_v_proj = register_module("add_v_proj", std::make_shared<models::Dense>(dim, dim, p));
      if (qk_norm) {
        norm_added_q = register_module("norm_added_q", std::make_shared<RmsNorm>(head_dim, p));
        norm_added_k = register_module("norm_added_k", std::make_shared<RmsNorm>(head_dim, p));
      }
      if (context_out) to_add_out = register_module("to_add_out", std::make_shared<models::Dense>(dim, dim, p));
    }
  }

  at::Tensor Heads(const at::Tensor& x) const { return x.unflatten(-1, {heads, head_dim}); }
  static at::Tensor Norm(const std::shared_ptr<RmsNorm>& norm, const at::Tensor& x) {
    return norm ? norm->forward(x) : x;
  }
  // q, k, v [B, N, H, D] of the image stream (to_*) or the text stream (add_*).
  Qkv Image(const at::Tensor& x) const {
    return {Norm(norm_q, Heads(to_q->forward(x))), Norm(norm_k, Heads(to_k->forward(x))), Heads(to_v->forward(x))};
  }
  Qkv Text(const at::Tensor& context) const {
    return {Norm(norm_added_q, Heads(add_q_proj->forward(context))),
            Norm(norm_added_k, Heads(add_k_proj->forward(context))), Heads(add_v_proj->forward(context))};
  }

  int64_t heads, head_dim;
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out{nullptr}, add_q_proj{nullptr}, add_k_proj{nullptr},
      add_v_proj{nullptr}, to_add_out{nullptr};
  std::shared_ptr<RmsNorm> norm_q, norm_k, norm_added_q, norm_added_k;
  ModuleList to_out{nullptr};
};

// diffusers' JointTransformerBlock. norm2 and norm2_context are LayerNorms
// without parameters; `last` (context_pre_only) has AdaLayerNormContinuous
// as norm1_context and no text output path.
struct JointBlock : torch::nn::Module {
  JointBlock(const Sd3TransformerConfig& c, bool dual, bool last, const ParameterSpec& p) : dual(dual), last(last) {
    const int64_t dim = c.inner_dim();
    const bool qk_norm = !c.qk_norm.empty();
    norm1 = register_module("norm1", std::make_shared<AdaNorm>(dim, dual ? 9 : 6, p));
    norm1_context = register_module("norm1_context", std::make_shared<AdaNorm>(dim, last ? 2 : 6, p));
    attn = register_module("attn", std::make_shared<Attention>(dim, c.num_attention_heads, c.attention_head_dim,
                                                               qk_norm, /*joint=*/true, /*context_out=*/!last, p));
    if (dual) {
      attn2 = register_module("attn2", std::make_shared<Attention>(dim, c.num_attention_heads, c.attention_head_dim,
                                                                   qk_norm, /*joint=*/false, false, p));
    }
    ff = register_module("ff", std::make_shared<FeedForward>(dim, p));
    if (!last) ff_context = register_module("ff_context", std::make_shared<FeedForward>(dim, p));
  }

  // `modulation`, `modulation_context`: norm1's and norm1_context's.
  absl::Status Forward(int layer, int dual_layer, DitHidden& h, const at::Tensor& modulation,
                       const at::Tensor& modulation_context, JointAttention& attention) {
    // shift, scale, gate (msa); shift, scale, gate (mlp); [shift, scale, gate (msa2)]
    const auto m = modulation.chunk(dual ? 9 : 6, 1);
    const at::Tensor x = h.x;
    std::vector<at::Tensor> c;
    Qkv text;
    if (h.context.defined()) {
      c = modulation_context.chunk(last ? 2 : 6, 1);
      // AdaLayerNormContinuous chunks scale first, then shift.
      const at::Tensor nc = last ? Modulate(h.context, c[1], c[0]) : Modulate(h.context, c[0], c[1]);
      text = attn->Text(nc);
    }
    auto a = attention.Attend(layer, text, attn->Image(Modulate(x, m[0], m[1])));
    if (!a.ok()) return a.status();
    h.x = x + m[2].unsqueeze(1) * attn->out->forward(a->image.to(x.scalar_type()).flatten(2, 3));
    if (dual) {
      // The second attention reads norm1's LayerNorm of the block's input.
      auto a2 = attention.AttendImage(dual_layer, attn2->Image(Modulate(x, m[6], m[7])));
      if (!a2.ok()) return a2.status();
      h.x = h.x + m[8].unsqueeze(1) * attn2->out->forward(a2->to(x.scalar_type()).flatten(2, 3));
    }
    h.x = h.x + m[5].unsqueeze(1) * ff->forward(Modulate(h.x, m[3], m[4]));
    if (h.context.defined()) {
      if (last) {
        h.context = at::Tensor();  // the text stream ends here
      } else {
        h.context = h.context + c[2].unsqueeze(1) * attn->to_add_out->forward(
                                                        a->text.to(h.context.scalar_type()).flatten(2, 3));
        h.context = h.context + c[5].unsqueeze(1) * ff_context->forward(Modulate(h.context, c[3], c[4]));
      }
    }
    return absl::OkStatus();
  }

  bool dual, last;
  std::shared_ptr<AdaNorm> norm1, norm1_context;
  std::shared_ptr<Attention> attn, attn2;
  std::shared_ptr<FeedForward> ff, ff_context;
};

// Holds the modules of one DitPart under their diffusers names (blocks keep
// their global index: "transformer_blocks.5").
struct Model : torch::nn::Module {
  Model(const Sd3TransformerConfig& c, const DitPart& part, const ParameterSpec& p) {
    const int64_t dim = c.inner_dim();
    time_text_embed =
        register_module("time_text_embed", std::make_shared<TimeTextEmbed>(dim, c.pooled_projection_dim, p));
    if (part.embedders) {
      pos_embed = register_module("pos_embed", std::make_shared<PosEmbed>(c, p));
      context_embedder = register_module(
          "context_embedder", std::make_shared<models::Dense>(c.joint_attention_dim, c.caption_projection_dim, p));
    }
    auto held = std::make_shared<Empty>();
    for (int i = part.first_block; i < part.end_block; ++i) {
      auto block = std::make_shared<JointBlock>(c, c.IsDualAttention(i), i == c.num_layers - 1, p);
      held->register_module(std::to_string(i), block);
      blocks.push_back({i, block});
    }
    if (!blocks.empty()) register_module("transformer_blocks", held);
    if (part.head) {
      norm_out = register_module("norm_out", std::make_shared<AdaNorm>(dim, 2, p));
      proj_out = register_module("proj_out", std::make_shared<models::Dense>(dim, 4 * c.out_channels, p));
    }
  }
  std::shared_ptr<TimeTextEmbed> time_text_embed;
  std::shared_ptr<PosEmbed> pos_embed;
  Linear context_embedder{nullptr}, proj_out{nullptr};
  std::vector<std::pair<int, std::shared_ptr<JointBlock>>> blocks;  // (global index, block)
  std::shared_ptr<AdaNorm> norm_out;
};

}  // namespace

struct Sd3Transformer::Impl {
  Sd3TransformerConfig config;
  DitPart part;
  std::shared_ptr<Model> model;
};

Sd3Transformer::Sd3Transformer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Sd3Transformer::~Sd3Transformer() = default;
torch::nn::Module& Sd3Transformer::module() { return *impl_->model; }
const Sd3TransformerConfig& Sd3Transformer::config() const { return impl_->config; }
const DitPart& Sd3Transformer::part() const { return impl_->part; }
int Sd3Transformer::num_blocks() const { return impl_->config.num_layers; }

absl::StatusOr<std::unique_ptr<Sd3Transformer>> Sd3Transformer::Create(const Sd3TransformerConfig& config,
                                                                       at::ScalarType dtype, const DitPart& part,
                                                                       models::ParameterInit init) {
  if (absl::Status s = ValidateSd3TransformerConfig(config); !s.ok()) return s;
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  auto resolved = models::ResolvePart("sd3", part, config.num_layers);
  if (!resolved.ok()) return resolved.status();
  impl->part = *resolved;
  try {
    impl->model = std::make_shared<Model>(config, impl->part, ParameterSpec{init, dtype});
    impl->model->to(dtype);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot build the SD3 transformer: ", e.what()));
  }
  return std::unique_ptr<Sd3Transformer>(new Sd3Transformer(std::move(impl)));
}

at::Tensor Sd3PositionEmbedding(int64_t dim, int64_t grid, double base_size) {
  // get_2d_sincos_pos_embed: positions arange(grid) / (grid / base_size) in
  // float32; frequencies in float64; meshgrid(w, h, "xy") puts the column
  // coordinate in the first half.
  const at::Tensor pos = (at::arange(grid, at::kFloat) / (static_cast<double>(grid) / base_size)).to(at::kDouble);
  const at::Tensor omega = 1.0 / at::pow(10000.0, at::arange(dim / 4, at::kDouble) / (dim / 4.0));
  const auto sincos = [&](const at::Tensor& p) {
    const at::Tensor out = at::outer(p.reshape(-1), omega);
    return at::cat({out.sin(), out.cos()}, 1);
  };
  const at::Tensor cols = pos.view({1, grid}).expand({grid, grid});
  const at::Tensor rows = pos.view({grid, 1}).expand({grid, grid});
  return at::cat({sincos(cols), sincos(rows)}, 1).to(at::kFloat);
}

absl::StatusOr<at::Tensor> Sd3Transformer::Forward(const at::Tensor& hidden_states,
                                                   const at::Tensor& encoder_hidden_states,
                                                   const at::Tensor& pooled_projections,
                                                   const at::Tensor& timestep) const {
  const Sd3TransformerConfig& c = impl_->config;
  if (!hidden_states.defined() || hidden_states.dim() != 4 || hidden_states.size(1) != c.in_channels ||
      hidden_states.size(2) % 2 != 0 || hidden_states.size(3) % 2 != 0 || hidden_states.size(2) == 0 ||
      hidden_states.size(3) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sd3: hidden_states must be [B, ", c.in_channels, ", H, W] with H and W even"));
  }
  const int64_t B = hidden_states.size(0), H = hidden_states.size(2), W = hidden_states.size(3);
  const int64_t rows = H / 2, cols = W / 2;
  if (rows > max_token_rows() || cols > max_token_rows()) {
    return absl::InvalidArgumentError(absl::StrCat("sd3: a ", H, "x", W, " latent is ", rows, "x", cols,
                                                   " tokens; the position embedding covers at most ",
                                                   max_token_rows(), " per side (pos_embed_max_size)"));
  }
  if (!encoder_hidden_states.defined() || encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != B ||
      encoder_hidden_states.size(2) != c.joint_attention_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("sd3: encoder_hidden_states must be [", B, ", T, ", c.joint_attention_dim, "]"));
  }
  if (!pooled_projections.defined() || !pooled_projections.sizes().equals({B, c.pooled_projection_dim})) {
    return absl::InvalidArgumentError(
        absl::StrCat("sd3: pooled_projections must be [", B, ", ", c.pooled_projection_dim, "]"));
  }
  if (!timestep.defined() || timestep.numel() != B) {
    return absl::InvalidArgumentError(absl::StrCat("sd3: timestep must hold ", B, " values"));
  }
  const DitPart& part = impl_->part;
  if (!part.embedders || !part.head || part.first_block != 0 || part.end_block != num_blocks()) {
    return absl::FailedPreconditionError("sd3: Forward needs the whole model; this one holds a part");
  }
  const int64_t C = c.in_channels, S = rows * cols;
  // The shared token packing: (channel, dy, dx) per 2×2 patch, row-major.
  const at::Tensor latents =
      hidden_states.reshape({B, C, rows, 2, cols, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({B, S, 4 * C});
  const DitConditioning conditioning = Condition(TimestepEmbedding(timestep, pooled_projections));
  const DitPositions positions =
      Positions(encoder_hidden_states.size(1), rows, cols, 0, S, hidden_states.device());
  DitHidden hidden = Embed(latents, encoder_hidden_states, positions);
  models::SerialJointAttention attention;
  if (absl::Status s = RunBlocks(hidden, conditioning, positions, attention); !s.ok()) return s;
  const int64_t O = c.out_channels;
  return Head(hidden.x, conditioning)
      .reshape({B, rows, cols, O, 2, 2})
      .permute({0, 3, 1, 4, 2, 5})
      .reshape({B, O, H, W});
}

at::Tensor Sd3Transformer::TimeEmbedding(const at::Tensor& sigma, const at::Tensor& /*guidance*/,
                                         const at::Tensor& pooled, models::DitImageSize /*size*/) const {
  // StableDiffusion3Pipeline: timestep = scheduler.timesteps = sigma·1000 in float32.
  return TimestepEmbedding(sigma.to(at::kFloat) * 1000, pooled);
}

at::Tensor Sd3Transformer::TimestepEmbedding(const at::Tensor& timestep, const at::Tensor& pooled_projections) const {
  Model& m = *impl_->model;
  const auto dtype = m.time_text_embed->timestep_embedder->linear_1->weight.scalar_type();
  const int64_t B = pooled_projections.size(0);
  return m.time_text_embed->forward(timestep.reshape({B}), pooled_projections.to(dtype));
}

DitConditioning Sd3Transformer::Condition(const at::Tensor& temb) const {
  Model& m = *impl_->model;
  DitConditioning c;
  for (auto& [index, block] : m.blocks) {
    c.blocks.push_back(block->norm1->Modulation(temb));
    c.blocks_context.push_back(block->norm1_context->Modulation(temb));
  }
  if (m.norm_out) c.head = m.norm_out->Modulation(temb);
  return c;
}

DitPositions Sd3Transformer::Positions(int64_t /*text_tokens*/, int64_t rows, int64_t cols, int64_t image_begin,
                                       int64_t image_end, c10::Device device) const {
  DitPositions p;
  const Model& m = *impl_->model;
  if (!m.pos_embed) return p;
  // PatchEmbed.cropped_pos_embed: the centre rows × cols of the M × M grid.
  const int64_t M = impl_->config.pos_embed_max_size;
  const int64_t top = (M - rows) / 2, left = (M - cols) / 2;
  p.image_embedding = m.pos_embed->pos_embed.view({M, M, -1})
                          .narrow(0, top, rows)
                          .narrow(1, left, cols)
                          .reshape({rows * cols, -1})
                          .narrow(0, image_begin, image_end - image_begin)
                          .to(device);
  return p;
}

DitHidden Sd3Transformer::Embed(const at::Tensor& latents, const at::Tensor& text, const DitPositions& positions,
                                const at::Tensor& /*text_mask: unused*/) const {
  Model& m = *impl_->model;
  const auto dtype = m.pos_embed->proj->weight.scalar_type();
  DitHidden h;
  h.x = (m.pos_embed->proj->forward(latents.to(dtype)) + positions.image_embedding.unsqueeze(0)).to(dtype);
  if (text.defined()) h.context = m.context_embedder->forward(text.to(dtype));
  return h;
}

absl::Status Sd3Transformer::RunBlockSpan(DitHidden& hidden, const DitConditioning& conditioning,
                                          const DitPositions& /*positions: added at Embed*/,
                                          JointAttention& attention, BlockSpan span) const {
  Model& m = *impl_->model;
  const int held = static_cast<int>(m.blocks.size());
  auto span_end = models::HeldSpanEnd("sd3", conditioning, held, span);
  if (!span_end.ok()) return span_end.status();
  const int end = *span_end;
  for (int i = span.begin; i < end; ++i) {
    const auto& [index, block] = m.blocks[i];
    if (absl::Status s = block->Forward(index, num_blocks() + index, hidden, conditioning.blocks[i],
                                        conditioning.blocks_context[i], attention);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

at::Tensor Sd3Transformer::FirstBlockModulatedInput(const DitHidden& hidden,
                                                    const DitConditioning& conditioning) const {
  // norm1's chunks start with the attention's shift and scale (6 or, with
  // dual attention, 9 of them).
  const bool dual = impl_->model->blocks.front().second->dual;
  const auto m = conditioning.blocks.front().chunk(dual ? 9 : 6, 1);
  return Modulate(hidden.x, m[0], m[1]);
}

at::Tensor Sd3Transformer::Head(const at::Tensor& x, const DitConditioning& conditioning) const {
  Model& m = *impl_->model;
  const auto scale_shift = conditioning.head.chunk(2, 1);  // AdaLayerNormContinuous: scale first, then shift
  const at::Tensor out = m.proj_out->forward(Modulate(x, scale_shift[1], scale_shift[0]));
  // proj_out's features are (dy, dx, channel) (diffusers' unpatchify); the
  // packed order is (channel, dy, dx).
  const int64_t B = out.size(0), S = out.size(1), O = impl_->config.out_channels;
  return out.view({B, S, 2, 2, O}).permute({0, 1, 4, 2, 3}).reshape({B, S, 4 * O});
}

}  // namespace ditserve::worker::sd3
