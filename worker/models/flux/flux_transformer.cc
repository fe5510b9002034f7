#include "worker/models/flux/flux_transformer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/common/dense.h"
#include "worker/models/common/dit_blocks.h"
#include "worker/models/flux/flow_match_scheduler.h"

namespace ditserve::worker::flux {
namespace {

using models::AdaNorm;
using models::ClampHalf;
using models::Empty;
using models::FeedForward;
using models::JointAttention;
using models::LayerNormNoAffine;
using models::Modulate;
using models::ParameterSpec;
using models::Qkv;
using models::RmsNorm;
using models::TwoLayer;
using Linear = std::shared_ptr<models::Dense>;
using torch::nn::ModuleList;

struct TimeTextEmbed : torch::nn::Module {
  TimeTextEmbed(int64_t dim, int64_t pooled_dim, bool guidance, const ParameterSpec& p) {
    timestep_embedder = register_module("timestep_embedder", std::make_shared<TwoLayer>(256, dim, p));
    if (guidance) guidance_embedder = register_module("guidance_embedder", std::make_shared<TwoLayer>(256, dim, p));
    text_embedder = register_module("text_embedder", std::make_shared<TwoLayer>(pooled_dim, dim, p));
  }
  at::Tensor forward(const at::Tensor& timestep, const at::Tensor& guidance, const at::Tensor& pooled) {
    const auto dtype = pooled.scalar_type();
    at::Tensor emb = timestep_embedder->forward(TimestepSinusoid256(timestep).to(dtype));
    if (guidance_embedder) emb = emb + guidance_embedder->forward(TimestepSinusoid256(guidance).to(dtype));
    return emb + text_embedder->forward(pooled);
  }
  std::shared_ptr<TwoLayer> timestep_embedder, guidance_embedder, text_embedder;
};

using models::ApplyRope;

struct Attention : torch::nn::Module {
  Attention(int64_t dim, int64_t heads, int64_t head_dim, bool joint, bool has_out, const ParameterSpec& p)
      : heads(heads), head_dim(head_dim) {
    to_q = register_module("to_q", std::make_shared<models::Dense>(dim, dim, p));
    to_k = register_module("to_k", std::make_shared<models::Dense>(dim, dim, p));
    to_v = register_module("to_v", std::make_shared<models::Dense>(dim, dim, p));
    norm_q = register_module("norm_q", std::make_shared<RmsNorm>(head_dim, p));
    norm_k = register_module("norm_k", std::make_shared<RmsNorm>(head_dim, p));
    if (has_out) {
      to_out = register_module("to_out", ModuleList());
      to_out->push_back(std::make_shared<models::Dense>(dim, dim, p));
    }
    if (joint) {
      add_q_proj = register_module("add_q_proj", std::make_shared<models::Dense>(dim, dim, p));
      add_k_proj = register_module("add_k_proj", std::make_shared<models::Dense>(dim, dim, p));
      add_v_proj = register_module("add_v_proj", std::make_shared<models::Dense>(dim, dim, p));
      norm_added_q = register_module("norm_added_q", std::make_shared<RmsNorm>(head_dim, p));
      norm_added_k = register_module("norm_added_k", std::make_shared<RmsNorm>(head_dim, p));
      to_add_out = register_module("to_add_out", std::make_shared<models::Dense>(dim, dim, p));
    }
  }
  at::Tensor Heads(const at::Tensor& x) const { return x.unflatten(-1, {heads, head_dim}); }

  // Attention over [context, x]: `context` (undefined: no text in this call)
  // uses the add_* projections when the block is joint (double-stream) and
  // the x projections otherwise (single-stream). Returns [B, N, H·D] per
  // stream in x's dtype, before output projections.
  absl::StatusOr<FluxHidden> Attend(int layer, const at::Tensor& x, const at::Tensor& context,
                                    const FluxRopeTables& rope, JointAttention& attention) {
    Qkv image{ApplyRope(norm_q->forward(Heads(to_q->forward(x))), rope.image_cos, rope.image_sin),
                  ApplyRope(norm_k->forward(Heads(to_k->forward(x))), rope.image_cos, rope.image_sin),
                  Heads(to_v->forward(x))};
    Qkv text;
    if (context.defined()) {
      const bool joint = static_cast<bool>(add_q_proj);
      const at::Tensor q = joint ? norm_added_q->forward(Heads(add_q_proj->forward(context)))
                                 : norm_q->forward(Heads(to_q->forward(context)));
      const at::Tensor k = joint ? norm_added_k->forward(Heads(add_k_proj->forward(context)))
                                 : norm_k->forward(Heads(to_k->forward(context)));
      text.v = Heads(joint ? add_v_proj->forward(context) : to_v->forward(context));
      text.q = ApplyRope(q, rope.text_cos, rope.text_sin);
      text.k = ApplyRope(k, rope.text_cos, rope.text_sin);
    }
    auto r = attention.Attend(layer, text, image);
    if (!r.ok()) return r.status();
    FluxHidden out;
    out.x = r->image.to(x.scalar_type()).flatten(2, 3);
    if (context.defined()) out.context = r->text.to(x.scalar_type()).flatten(2, 3);
    return out;
  }

  int64_t heads, head_dim;
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, add_q_proj{nullptr}, add_k_proj{nullptr},
      add_v_proj{nullptr}, to_add_out{nullptr};
  std::shared_ptr<RmsNorm> norm_q, norm_k, norm_added_q, norm_added_k;
  ModuleList to_out{nullptr};
};

struct DoubleBlock : torch::nn::Module {
  DoubleBlock(int64_t dim, int64_t heads, int64_t head_dim, const ParameterSpec& p) {
    norm1 = register_module("norm1", std::make_shared<AdaNorm>(dim, 6, p));
    norm1_context = register_module("norm1_context", std::make_shared<AdaNorm>(dim, 6, p));
    attn = register_module("attn", std::make_shared<Attention>(dim, heads, head_dim, true, true, p));
    ff = register_module("ff", std::make_shared<FeedForward>(dim, p));
    ff_context = register_module("ff_context", std::make_shared<FeedForward>(dim, p));
  }
  // `modulation`, `modulation_context`: norm1's and norm1_context's.
  absl::Status Forward(int layer, FluxHidden& h, const at::Tensor& modulation, const at::Tensor& modulation_context,
                       const FluxRopeTables& rope, JointAttention& attention) {
    const auto m = modulation.chunk(6, 1);  // shift, scale, gate (msa); shift, scale, gate (mlp)
    std::vector<at::Tensor> c;
    at::Tensor nc;
    if (h.context.defined()) {
      c = modulation_context.chunk(6, 1);
      nc = Modulate(h.context, c[0], c[1]);
    }
    auto a = attn->Attend(layer, Modulate(h.x, m[0], m[1]), nc, rope, attention);
    if (!a.ok()) return a.status();
    h.x = h.x + m[2].unsqueeze(1) * attn->to_out[0]->as<models::Dense>()->forward(a->x);
    h.x = h.x + m[5].unsqueeze(1) * ff->forward(Modulate(h.x, m[3], m[4]));
    if (h.context.defined()) {
      h.context = h.context + c[2].unsqueeze(1) * attn->to_add_out->forward(a->context);
      h.context = h.context + c[5].unsqueeze(1) * ff_context->forward(Modulate(h.context, c[3], c[4]));
      h.context = ClampHalf(h.context);
    }
    return absl::OkStatus();
  }
  std::shared_ptr<AdaNorm> norm1, norm1_context;
  std::shared_ptr<Attention> attn;
  std::shared_ptr<FeedForward> ff, ff_context;
};

// diffusers runs it on the concatenation [context, x]; every operation but
// attention is per token, so the two streams are kept apart here.
struct SingleBlock : torch::nn::Module {
  SingleBlock(int64_t dim, int64_t heads, int64_t head_dim, const ParameterSpec& p) {
    norm = register_module("norm", std::make_shared<AdaNorm>(dim, 3, p));
    proj_mlp = register_module("proj_mlp", std::make_shared<models::Dense>(dim, 4 * dim, p));
    proj_out = register_module("proj_out", std::make_shared<models::Dense>(5 * dim, dim, p));
    attn = register_module("attn", std::make_shared<Attention>(dim, heads, head_dim, false, false, p));
  }
  // `modulation`: norm's.
  absl::Status Forward(int layer, FluxHidden& h, const at::Tensor& modulation, const FluxRopeTables& rope,
                       JointAttention& attention) {
    const auto m = modulation.chunk(3, 1);  // shift, scale, gate
    const at::Tensor nx = Modulate(h.x, m[0], m[1]);
    const at::Tensor nc = h.context.defined() ? Modulate(h.context, m[0], m[1]) : at::Tensor();
    auto a = attn->Attend(layer, nx, nc, rope, attention);
    if (!a.ok()) return a.status();
    const auto update = [&](const at::Tensor& stream, const at::Tensor& normed, const at::Tensor& attended) {
      const at::Tensor mlp = proj_mlp->ForwardGeluTanh(normed);
      return ClampHalf(stream + m[2].unsqueeze(1) * proj_out->ForwardConcat(attended, mlp));
    };
    h.x = update(h.x, nx, a->x);
    if (h.context.defined()) h.context = update(h.context, nc, a->context);
    return absl::OkStatus();
  }
  std::shared_ptr<AdaNorm> norm;
  Linear proj_mlp{nullptr}, proj_out{nullptr};
  std::shared_ptr<Attention> attn;
};

// Holds the modules of one FluxPart under their diffusers names (blocks
// keep their global index: "transformer_blocks.5").
struct Model : torch::nn::Module {
  Model(const FluxTransformerConfig& c, const FluxPart& part, const ParameterSpec& p) {
    const int64_t dim = c.inner_dim();
    time_text_embed = register_module(
        "time_text_embed", std::make_shared<TimeTextEmbed>(dim, c.pooled_projection_dim, c.guidance_embeds, p));
    if (part.embedders) {
      context_embedder = register_module("context_embedder", std::make_shared<models::Dense>(c.joint_attention_dim, dim, p));
      x_embedder = register_module("x_embedder", std::make_shared<models::Dense>(c.in_channels, dim, p));
    }
    auto doubles = std::make_shared<Empty>();
    auto singles = std::make_shared<Empty>();
    for (int i = part.first_block; i < part.end_block; ++i) {
      if (i < c.num_layers) {
        auto block = std::make_shared<DoubleBlock>(dim, c.num_attention_heads, c.attention_head_dim, p);
        doubles->register_module(std::to_string(i), block);
        double_blocks.push_back({i, block});
      } else {
        auto block = std::make_shared<SingleBlock>(dim, c.num_attention_heads, c.attention_head_dim, p);
        singles->register_module(std::to_string(i - c.num_layers), block);
        single_blocks.push_back({i, block});
      }
    }
    if (!double_blocks.empty()) register_module("transformer_blocks", doubles);
    if (!single_blocks.empty()) register_module("single_transformer_blocks", singles);
    if (part.head) {
      norm_out = register_module("norm_out", std::make_shared<AdaNorm>(dim, 2, p));
      proj_out = register_module("proj_out", std::make_shared<models::Dense>(dim, c.patch_size * c.patch_size * c.out_channels, p));
    }
  }
  std::shared_ptr<TimeTextEmbed> time_text_embed;
  Linear context_embedder{nullptr}, x_embedder{nullptr}, proj_out{nullptr};
  std::vector<std::pair<int, std::shared_ptr<DoubleBlock>>> double_blocks;  // (global index, block)
  std::vector<std::pair<int, std::shared_ptr<SingleBlock>>> single_blocks;
  std::shared_ptr<AdaNorm> norm_out;
};

}  // namespace

struct FluxTransformer::Impl {
  FluxTransformerConfig config;
  FluxPart part;
  std::shared_ptr<Model> model;
};

FluxTransformer::FluxTransformer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FluxTransformer::~FluxTransformer() = default;
torch::nn::Module& FluxTransformer::module() { return *impl_->model; }
const FluxTransformerConfig& FluxTransformer::config() const { return impl_->config; }
const FluxPart& FluxTransformer::part() const { return impl_->part; }
int FluxTransformer::num_blocks() const { return impl_->config.num_layers + impl_->config.num_single_layers; }

absl::StatusOr<std::unique_ptr<FluxTransformer>> FluxTransformer::Create(const FluxTransformerConfig& config,
                                                                         at::ScalarType dtype,
                                                                         const FluxPart& part,
                                                                         models::ParameterInit init) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  auto resolved = models::ResolvePart("flux", part, config.num_layers + config.num_single_layers);
  if (!resolved.ok()) return resolved.status();
  impl->part = *resolved;
  try {
    impl->model = std::make_shared<Model>(config, impl->part, ParameterSpec{init, dtype});
    impl->model->to(dtype);
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot build the Flux transformer: ", e.what()));
  }
  return std::unique_ptr<FluxTransformer>(new FluxTransformer(std::move(impl)));
}

std::pair<at::Tensor, at::Tensor> FluxRope(const at::Tensor& ids, const std::vector<int>& axes_dims,
                                           double theta) {
  std::vector<at::Tensor> cos, sin;
  const at::Tensor pos = ids.to(at::kDouble);
  for (size_t axis = 0; axis < axes_dims.size(); ++axis) {
    const int dim = axes_dims[axis];
    const at::Tensor exponents = at::arange(0, dim, 2, pos.options()) / dim;
    const at::Tensor freqs = 1.0 / at::pow(theta, exponents);
    const at::Tensor angles = at::outer(pos.select(1, static_cast<int64_t>(axis)), freqs);
    cos.push_back(angles.cos().repeat_interleave(2, 1).to(at::kFloat));
    sin.push_back(angles.sin().repeat_interleave(2, 1).to(at::kFloat));
  }
  return {at::cat(cos, -1), at::cat(sin, -1)};
}

absl::StatusOr<at::Tensor> FluxTransformer::Forward(const FluxInputs& in) const {
  const FluxTransformerConfig& c = impl_->config;
  if (!in.hidden_states.defined() || in.hidden_states.dim() != 3 || in.hidden_states.size(2) != c.in_channels) {
    return absl::InvalidArgumentError(absl::StrCat("flux: hidden_states must be [B, S, ", c.in_channels, "]"));
  }
  const int64_t B = in.hidden_states.size(0), S = in.hidden_states.size(1);
  if (!in.encoder_hidden_states.defined() || in.encoder_hidden_states.dim() != 3 ||
      in.encoder_hidden_states.size(0) != B || in.encoder_hidden_states.size(2) != c.joint_attention_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("flux: encoder_hidden_states must be [", B, ", T, ", c.joint_attention_dim, "]"));
  }
  const int64_t T = in.encoder_hidden_states.size(1);
  if (!in.pooled_projections.defined() || !in.pooled_projections.sizes().equals({B, c.pooled_projection_dim})) {
    return absl::InvalidArgumentError(absl::StrCat("flux: pooled_projections must be [", B, ", ", c.pooled_projection_dim, "]"));
  }
  if (!in.timestep.defined() || in.timestep.numel() != B) {
    return absl::InvalidArgumentError(absl::StrCat("flux: timestep must hold ", B, " values"));
  }
  if (c.guidance_embeds != in.guidance.defined()) {
    return absl::InvalidArgumentError(c.guidance_embeds ? "flux: this model needs a guidance value"
                                                        : "flux: this model takes no guidance value");
  }
  if (!in.img_ids.defined() || !in.img_ids.sizes().equals({S, 3}) || !in.txt_ids.defined() ||
      !in.txt_ids.sizes().equals({T, 3})) {
    return absl::InvalidArgumentError(absl::StrCat("flux: img_ids must be [", S, ", 3] and txt_ids [", T, ", 3]"));
  }
  const int64_t head_dim = c.attention_head_dim;
  const auto table_is = [](const at::Tensor& t, int64_t rows, int64_t cols) {
    return t.defined() && t.sizes().equals({rows, cols});
  };
  if (in.rope.image_cos.defined() &&
      !(table_is(in.rope.image_cos, S, head_dim) && table_is(in.rope.image_sin, S, head_dim) &&
        table_is(in.rope.text_cos, T, head_dim) && table_is(in.rope.text_sin, T, head_dim))) {
    return absl::InvalidArgumentError(absl::StrCat("flux: rope tables must be [", S, ", ", head_dim, "] (image) and [",
                                                   T, ", ", head_dim, "] (text)"));
  }
  const FluxPart& part = impl_->part;
  if (!part.embedders || !part.head || part.first_block != 0 || part.end_block != num_blocks()) {
    return absl::FailedPreconditionError("flux: Forward needs the whole model; this one holds a part");
  }
  const FluxConditioning conditioning = Condition(TimestepEmbedding(in.timestep, in.guidance, in.pooled_projections));
  FluxHidden hidden = Embed(in.hidden_states, in.encoder_hidden_states);
  models::SerialJointAttention attention;
  const FluxRopeTables rope =
      in.rope.image_cos.defined() ? in.rope : Rope(in.txt_ids, in.img_ids, hidden.x.device());
  if (absl::Status s = RunBlocks(hidden, conditioning, rope, attention); !s.ok()) return s;
  return Head(hidden.x, conditioning);
}

at::Tensor FluxTransformer::TimeEmbedding(const at::Tensor& sigma, const at::Tensor& guidance,
                                          const at::Tensor& pooled, models::DitImageSize /*size*/) const {
  // FluxPipeline: timestep = (sigma·1000 in float32).to(dtype) / 1000.
  const auto dtype = impl_->model->time_text_embed->timestep_embedder->linear_1->weight.scalar_type();
  const at::Tensor timestep = (sigma.to(at::kFloat) * 1000).to(dtype) / 1000;
  return TimestepEmbedding(timestep, guidance, pooled);
}

models::DitPositions FluxTransformer::Positions(int64_t text_tokens, int64_t rows, int64_t cols, int64_t image_begin,
                                                int64_t image_end, c10::Device device) const {
  const at::Tensor img_ids = LatentImageIds(2 * rows, 2 * cols).narrow(0, image_begin, image_end - image_begin);
  const at::Tensor txt_ids = text_tokens > 0 ? at::zeros({text_tokens, 3}, at::kFloat) : at::Tensor();
  return Rope(txt_ids, img_ids, device);
}

at::Tensor FluxTransformer::TimestepEmbedding(const at::Tensor& timestep, const at::Tensor& guidance,
                                              const at::Tensor& pooled_projections) const {
  Model& m = *impl_->model;
  const auto dtype = m.time_text_embed->timestep_embedder->linear_1->weight.scalar_type();
  const int64_t B = pooled_projections.size(0);
  const at::Tensor t = timestep.to(dtype).reshape({B}) * 1000;
  at::Tensor g;
  if (guidance.defined()) g = guidance.to(dtype).reshape({B}) * 1000;
  return m.time_text_embed->forward(t, g, pooled_projections.to(dtype));
}

FluxHidden FluxTransformer::Embed(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                  const models::DitPositions& /*positions: RoPE, applied in the blocks*/,
                                  const at::Tensor& /*text_mask: unused*/) const {
  Model& m = *impl_->model;
  const auto dtype = m.x_embedder->weight.scalar_type();
  FluxHidden h;
  h.x = m.x_embedder->forward(hidden_states.to(dtype));
  if (encoder_hidden_states.defined()) h.context = m.context_embedder->forward(encoder_hidden_states.to(dtype));
  return h;
}

FluxConditioning FluxTransformer::Condition(const at::Tensor& temb) const {
  Model& m = *impl_->model;
  FluxConditioning c;
  for (auto& [index, block] : m.double_blocks) {
    c.blocks.push_back(block->norm1->Modulation(temb));
    c.blocks_context.push_back(block->norm1_context->Modulation(temb));
  }
  for (auto& [index, block] : m.single_blocks) {
    c.blocks.push_back(block->norm->Modulation(temb));
    c.blocks_context.emplace_back();
  }
  if (m.norm_out) c.head = m.norm_out->Modulation(temb);
  return c;
}

absl::Status FluxTransformer::RunBlockSpan(FluxHidden& hidden, const FluxConditioning& conditioning,
                                           const FluxRopeTables& rope, JointAttention& attention,
                                           BlockSpan span) const {
  Model& m = *impl_->model;
  const int held = static_cast<int>(m.double_blocks.size() + m.single_blocks.size());
  auto span_end = models::HeldSpanEnd("flux", conditioning, held, span);
  if (!span_end.ok()) return span_end.status();
  const int end = *span_end;
  const int doubles = static_cast<int>(m.double_blocks.size());
  for (int i = span.begin; i < end; ++i) {
    if (i < doubles) {
      auto& [index, block] = m.double_blocks[i];
      if (absl::Status s = block->Forward(index, hidden, conditioning.blocks[i], conditioning.blocks_context[i], rope,
                                          attention);
          !s.ok()) {
        return s;
      }
    } else {
      auto& [index, block] = m.single_blocks[i - doubles];
      if (absl::Status s = block->Forward(index, hidden, conditioning.blocks[i], rope, attention); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

at::Tensor FluxTransformer::FirstBlockModulatedInput(const FluxHidden& hidden,
                                                     const FluxConditioning& conditioning) const {
  // Block 0 is double-stream (6 chunks) unless the model has none (3):
  // either way shift and scale come first.
  const bool double_block = !impl_->model->double_blocks.empty();
  const auto m = conditioning.blocks.front().chunk(double_block ? 6 : 3, 1);
  return Modulate(hidden.x, m[0], m[1]);
}

at::Tensor FluxTransformer::Head(const at::Tensor& x, const FluxConditioning& conditioning) const {
  Model& m = *impl_->model;
  const auto scale_shift = conditioning.head.chunk(2, 1);  // scale first, then shift
  return m.proj_out->forward(LayerNormNoAffine(x) * (1 + scale_shift[0].unsqueeze(1)) + scale_shift[1].unsqueeze(1));
}

FluxRopeTables FluxTransformer::Rope(const at::Tensor& txt_ids, const at::Tensor& img_ids, c10::Device device) const {
  FluxRopeTables r;
  const auto& axes = impl_->config.axes_dims_rope;
  const auto [icos, isin] = FluxRope(img_ids.cpu(), axes);
  r.image_cos = icos.to(device);
  r.image_sin = isin.to(device);
  if (txt_ids.defined()) {
    const auto [tcos, tsin] = FluxRope(txt_ids.cpu(), axes);
    r.text_cos = tcos.to(device);
    r.text_sin = tsin.to(device);
  }
  return r;
}

}  // namespace ditserve::worker::flux
