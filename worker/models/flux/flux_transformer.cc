#include "worker/models/flux/flux_transformer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention.h"

namespace ditserve::worker::flux {
namespace {

using torch::nn::Linear;
using torch::nn::LinearOptions;
using torch::nn::ModuleList;

at::Tensor LayerNormNoAffine(const at::Tensor& x) {
  return at::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6);
}

// Modules whose only content is named parameters/submodules.
struct Empty : torch::nn::Module {};

struct RmsNorm : torch::nn::Module {
  explicit RmsNorm(int64_t dim) { weight = register_parameter("weight", at::ones({dim})); }
  at::Tensor forward(const at::Tensor& x) const {
    const at::Tensor var = x.to(at::kFloat).pow(2).mean(-1, /*keepdim=*/true);
    at::Tensor y = x * at::rsqrt(var + 1e-6);
    if (weight.scalar_type() == at::kHalf || weight.scalar_type() == at::kBFloat16) {
      y = y.to(weight.scalar_type());
    }
    return y * weight;
  }
  at::Tensor weight;
};

// linear_1 -> SiLU -> linear_2 (TimestepEmbedding, PixArtAlphaTextProjection).
struct TwoLayer : torch::nn::Module {
  TwoLayer(int64_t in, int64_t out) {
    linear_1 = register_module("linear_1", Linear(LinearOptions(in, out)));
    linear_2 = register_module("linear_2", Linear(LinearOptions(out, out)));
  }
  at::Tensor forward(const at::Tensor& x) { return linear_2->forward(at::silu(linear_1->forward(x))); }
  Linear linear_1{nullptr}, linear_2{nullptr};
};

struct TimeTextEmbed : torch::nn::Module {
  TimeTextEmbed(int64_t dim, int64_t pooled_dim, bool guidance) {
    timestep_embedder = register_module("timestep_embedder", std::make_shared<TwoLayer>(256, dim));
    if (guidance) guidance_embedder = register_module("guidance_embedder", std::make_shared<TwoLayer>(256, dim));
    text_embedder = register_module("text_embedder", std::make_shared<TwoLayer>(pooled_dim, dim));
  }
  at::Tensor forward(const at::Tensor& timestep, const at::Tensor& guidance, const at::Tensor& pooled) {
    const auto dtype = pooled.scalar_type();
    at::Tensor emb = timestep_embedder->forward(TimestepSinusoid256(timestep).to(dtype));
    if (guidance_embedder) emb = emb + guidance_embedder->forward(TimestepSinusoid256(guidance).to(dtype));
    return emb + text_embedder->forward(pooled);
  }
  std::shared_ptr<TwoLayer> timestep_embedder, guidance_embedder, text_embedder;
};

// AdaLayerNormZero (6 chunks) / AdaLayerNormZeroSingle (3 chunks) /
// AdaLayerNormContinuous (2 chunks: scale, shift): a "linear" on SiLU(temb).
struct AdaNorm : torch::nn::Module {
  AdaNorm(int64_t dim, int chunks) : chunks(chunks) {
    linear = register_module("linear", Linear(LinearOptions(dim, chunks * dim)));
  }
  std::vector<at::Tensor> Modulation(const at::Tensor& temb) {
    return linear->forward(at::silu(temb)).chunk(chunks, 1);
  }
  Linear linear{nullptr};
  int chunks;
};

at::Tensor Modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return LayerNormNoAffine(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}

// (x.float()·cos + rotate_half_interleaved(x).float()·sin).to(x.dtype), on
// [B, S, H, D] with cos/sin [S, D].
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  std::vector<int64_t> pairs = x.sizes().vec();
  pairs.back() /= 2;
  pairs.push_back(2);
  const at::Tensor xp = x.reshape(pairs);
  const at::Tensor real = xp.select(-1, 0), imag = xp.select(-1, 1);
  const at::Tensor rotated = at::stack({-imag, real}, -1).flatten(3);
  const at::Tensor c = cos.unsqueeze(0).unsqueeze(2), s = sin.unsqueeze(0).unsqueeze(2);
  return (x.to(at::kFloat) * c + rotated.to(at::kFloat) * s).to(x.scalar_type());
}

struct Attention : torch::nn::Module {
  Attention(int64_t dim, int64_t heads, int64_t head_dim, bool joint, bool has_out)
      : heads(heads), head_dim(head_dim) {
    to_q = register_module("to_q", Linear(LinearOptions(dim, dim)));
    to_k = register_module("to_k", Linear(LinearOptions(dim, dim)));
    to_v = register_module("to_v", Linear(LinearOptions(dim, dim)));
    norm_q = register_module("norm_q", std::make_shared<RmsNorm>(head_dim));
    norm_k = register_module("norm_k", std::make_shared<RmsNorm>(head_dim));
    if (has_out) {
      to_out = register_module("to_out", ModuleList());
      to_out->push_back(Linear(LinearOptions(dim, dim)));
    }
    if (joint) {
      add_q_proj = register_module("add_q_proj", Linear(LinearOptions(dim, dim)));
      add_k_proj = register_module("add_k_proj", Linear(LinearOptions(dim, dim)));
      add_v_proj = register_module("add_v_proj", Linear(LinearOptions(dim, dim)));
      norm_added_q = register_module("norm_added_q", std::make_shared<RmsNorm>(head_dim));
      norm_added_k = register_module("norm_added_k", std::make_shared<RmsNorm>(head_dim));
      to_add_out = register_module("to_add_out", Linear(LinearOptions(dim, dim)));
    }
  }
  at::Tensor Heads(const at::Tensor& x) const { return x.unflatten(-1, {heads, head_dim}); }

  // Returns the attention over [context, x] (context may be undefined), as
  // [B, T+S, H·D] in x's dtype, before output projections.
  absl::StatusOr<at::Tensor> Attend(const at::Tensor& x, const at::Tensor& context,
                                    const at::Tensor& cos, const at::Tensor& sin) {
    at::Tensor q = norm_q->forward(Heads(to_q->forward(x)));
    at::Tensor k = norm_k->forward(Heads(to_k->forward(x)));
    at::Tensor v = Heads(to_v->forward(x));
    if (context.defined()) {
      q = at::cat({norm_added_q->forward(Heads(add_q_proj->forward(context))), q}, 1);
      k = at::cat({norm_added_k->forward(Heads(add_k_proj->forward(context))), k}, 1);
      v = at::cat({Heads(add_v_proj->forward(context)), v}, 1);
    }
    q = ApplyRope(q, cos, sin);
    k = ApplyRope(k, cos, sin);
    auto r = kernels::AttentionWithLse(q, k, v, at::Tensor());
    if (!r.ok()) return r.status();
    return r->out.to(x.scalar_type()).flatten(2, 3);
  }

  int64_t heads, head_dim;
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, add_q_proj{nullptr}, add_k_proj{nullptr},
      add_v_proj{nullptr}, to_add_out{nullptr};
  std::shared_ptr<RmsNorm> norm_q, norm_k, norm_added_q, norm_added_k;
  ModuleList to_out{nullptr};
};

// FeedForward(dim, activation "gelu-approximate"): net.0.proj, net.2.
struct FeedForward : torch::nn::Module {
  explicit FeedForward(int64_t dim) {
    net = register_module("net", ModuleList());
    auto gelu = std::make_shared<Empty>();
    proj = gelu->register_module("proj", Linear(LinearOptions(dim, 4 * dim)));
    net->push_back(gelu);
    net->push_back(std::make_shared<Empty>());  // dropout
    out = Linear(LinearOptions(4 * dim, dim));
    net->push_back(out);
  }
  at::Tensor forward(const at::Tensor& x) { return out->forward(at::gelu(proj->forward(x), "tanh")); }
  ModuleList net{nullptr};
  Linear proj{nullptr}, out{nullptr};
};

struct DoubleBlock : torch::nn::Module {
  DoubleBlock(int64_t dim, int64_t heads, int64_t head_dim) {
    norm1 = register_module("norm1", std::make_shared<AdaNorm>(dim, 6));
    norm1_context = register_module("norm1_context", std::make_shared<AdaNorm>(dim, 6));
    attn = register_module("attn", std::make_shared<Attention>(dim, heads, head_dim, true, true));
    ff = register_module("ff", std::make_shared<FeedForward>(dim));
    ff_context = register_module("ff_context", std::make_shared<FeedForward>(dim));
  }
  // Updates (x, context) in place of the returned pair.
  absl::Status Forward(at::Tensor& x, at::Tensor& context, const at::Tensor& temb,
                       const at::Tensor& cos, const at::Tensor& sin) {
    const auto m = norm1->Modulation(temb);          // shift, scale, gate (msa); shift, scale, gate (mlp)
    const auto c = norm1_context->Modulation(temb);
    const at::Tensor nx = Modulate(x, m[0], m[1]);
    const at::Tensor nc = Modulate(context, c[0], c[1]);
    auto joint = attn->Attend(nx, nc, cos, sin);
    if (!joint.ok()) return joint.status();
    const int64_t T = context.size(1);
    const at::Tensor attn_x = attn->to_out[0]->as<torch::nn::Linear>()->forward(joint->narrow(1, T, x.size(1)));
    const at::Tensor attn_c = attn->to_add_out->forward(joint->narrow(1, 0, T));
    x = x + m[2].unsqueeze(1) * attn_x;
    x = x + m[5].unsqueeze(1) * ff->forward(Modulate(x, m[3], m[4]));
    context = context + c[2].unsqueeze(1) * attn_c;
    context = context + c[5].unsqueeze(1) * ff_context->forward(Modulate(context, c[3], c[4]));
    if (context.scalar_type() == at::kHalf) context = context.clamp(-65504, 65504);
    return absl::OkStatus();
  }
  std::shared_ptr<AdaNorm> norm1, norm1_context;
  std::shared_ptr<Attention> attn;
  std::shared_ptr<FeedForward> ff, ff_context;
};

struct SingleBlock : torch::nn::Module {
  SingleBlock(int64_t dim, int64_t heads, int64_t head_dim) {
    norm = register_module("norm", std::make_shared<AdaNorm>(dim, 3));
    proj_mlp = register_module("proj_mlp", Linear(LinearOptions(dim, 4 * dim)));
    proj_out = register_module("proj_out", Linear(LinearOptions(5 * dim, dim)));
    attn = register_module("attn", std::make_shared<Attention>(dim, heads, head_dim, false, false));
  }
  // `joint` is [context, x] along the sequence.
  absl::Status Forward(at::Tensor& joint, const at::Tensor& temb, const at::Tensor& cos,
                       const at::Tensor& sin) {
    const auto m = norm->Modulation(temb);  // shift, scale, gate
    const at::Tensor n = Modulate(joint, m[0], m[1]);
    const at::Tensor mlp = at::gelu(proj_mlp->forward(n), "tanh");
    auto a = attn->Attend(n, at::Tensor(), cos, sin);
    if (!a.ok()) return a.status();
    joint = joint + m[2].unsqueeze(1) * proj_out->forward(at::cat({*a, mlp}, 2));
    if (joint.scalar_type() == at::kHalf) joint = joint.clamp(-65504, 65504);
    return absl::OkStatus();
  }
  std::shared_ptr<AdaNorm> norm;
  Linear proj_mlp{nullptr}, proj_out{nullptr};
  std::shared_ptr<Attention> attn;
};

struct Model : torch::nn::Module {
  explicit Model(const FluxTransformerConfig& c) {
    const int64_t dim = c.inner_dim();
    time_text_embed = register_module(
        "time_text_embed", std::make_shared<TimeTextEmbed>(dim, c.pooled_projection_dim, c.guidance_embeds));
    context_embedder = register_module("context_embedder", Linear(LinearOptions(c.joint_attention_dim, dim)));
    x_embedder = register_module("x_embedder", Linear(LinearOptions(c.in_channels, dim)));
    transformer_blocks = register_module("transformer_blocks", ModuleList());
    for (int i = 0; i < c.num_layers; ++i) {
      transformer_blocks->push_back(std::make_shared<DoubleBlock>(dim, c.num_attention_heads, c.attention_head_dim));
    }
    single_transformer_blocks = register_module("single_transformer_blocks", ModuleList());
    for (int i = 0; i < c.num_single_layers; ++i) {
      single_transformer_blocks->push_back(
          std::make_shared<SingleBlock>(dim, c.num_attention_heads, c.attention_head_dim));
    }
    norm_out = register_module("norm_out", std::make_shared<AdaNorm>(dim, 2));
    proj_out = register_module("proj_out", Linear(LinearOptions(dim, c.patch_size * c.patch_size * c.out_channels)));
  }
  std::shared_ptr<TimeTextEmbed> time_text_embed;
  Linear context_embedder{nullptr}, x_embedder{nullptr}, proj_out{nullptr};
  ModuleList transformer_blocks{nullptr}, single_transformer_blocks{nullptr};
  std::shared_ptr<AdaNorm> norm_out;
};

}  // namespace

struct FluxTransformer::Impl {
  FluxTransformerConfig config;
  std::shared_ptr<Model> model;
};

FluxTransformer::FluxTransformer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FluxTransformer::~FluxTransformer() = default;
torch::nn::Module& FluxTransformer::module() { return *impl_->model; }
const FluxTransformerConfig& FluxTransformer::config() const { return impl_->config; }

absl::StatusOr<std::unique_ptr<FluxTransformer>> FluxTransformer::Create(const FluxTransformerConfig& config,
                                                                         at::ScalarType dtype) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  try {
    impl->model = std::make_shared<Model>(config);
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

at::Tensor TimestepSinusoid256(const at::Tensor& timesteps) {
  constexpr int kHalf = 128;
  const at::Tensor exponent =
      at::arange(0, kHalf, timesteps.options().dtype(at::kFloat)) * (-std::log(10000.0) / kHalf);
  const at::Tensor args = timesteps.to(at::kFloat).unsqueeze(1) * exponent.exp().unsqueeze(0);
  return at::cat({args.cos(), args.sin()}, -1);
}

absl::StatusOr<at::Tensor> FluxTransformer::Forward(const FluxInputs& in) const {
  const FluxTransformerConfig& c = impl_->config;
  Model& m = *impl_->model;
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
  at::NoGradGuard no_grad;
  const auto dtype = m.x_embedder->weight.scalar_type();
  at::Tensor x = m.x_embedder->forward(in.hidden_states.to(dtype));
  const at::Tensor timestep = in.timestep.to(dtype).reshape({B}) * 1000;
  at::Tensor guidance;
  if (in.guidance.defined()) guidance = in.guidance.to(dtype).reshape({B}) * 1000;
  const at::Tensor temb = m.time_text_embed->forward(timestep, guidance, in.pooled_projections.to(dtype));
  at::Tensor context = m.context_embedder->forward(in.encoder_hidden_states.to(dtype));
  const auto [cos_cpu, sin_cpu] = FluxRope(at::cat({in.txt_ids, in.img_ids}, 0).cpu(), c.axes_dims_rope);
  const at::Tensor cos = cos_cpu.to(x.device()), sin = sin_cpu.to(x.device());
  for (const auto& block : *m.transformer_blocks) {
    if (absl::Status s = block->as<DoubleBlock>()->Forward(x, context, temb, cos, sin); !s.ok()) return s;
  }
  at::Tensor joint = at::cat({context, x}, 1);
  for (const auto& block : *m.single_transformer_blocks) {
    if (absl::Status s = block->as<SingleBlock>()->Forward(joint, temb, cos, sin); !s.ok()) return s;
  }
  x = joint.narrow(1, T, S);
  const auto scale_shift = m.norm_out->Modulation(temb);  // scale first, then shift
  x = LayerNormNoAffine(x) * (1 + scale_shift[0].unsqueeze(1)) + scale_shift[1].unsqueeze(1);
  return m.proj_out->forward(x);
}

}  // namespace ditserve::worker::flux
