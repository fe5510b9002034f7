#pragma once

// FluxTransformer2DModel as diffusers defines it. Parameter names equal the
// diffusers checkpoint keys ("transformer_blocks.0.attn.to_q.weight"), so
// LoadModuleWeights(module(), checkpoint) fills it.
//
// Besides the whole-model Forward, the model runs in pieces for parallel
// generation: TimeEmbedding, Condition, Embed, RunBlocks (through a FluxAttention) and
// Head. A FluxPart holds only some of the pieces (a PipeFusion stage).

#include <memory>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/models/common/parameter_init.h"
#include "worker/models/flux/flux_attention.h"
#include "worker/models/flux/flux_config.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::flux {

// RoPE (cos, sin) [N, head_dim] float32 for the text and the image tokens
// of one call, on the run device. Text tables may be undefined.
struct FluxRopeTables {
  at::Tensor text_cos, text_sin, image_cos, image_sin;
};

struct FluxInputs {
  at::Tensor hidden_states;          // [B, S, in_channels]: packed 2x2 latents
  at::Tensor encoder_hidden_states;  // [B, T, joint_attention_dim]: T5 output
  at::Tensor pooled_projections;     // [B, pooled_projection_dim]: CLIP pooled
  at::Tensor timestep;               // [B]: sigma in [0, 1] (scaled by 1000 inside)
  at::Tensor guidance;               // [B] (guidance_embeds models) or undefined
  at::Tensor img_ids;                // [S, 3]
  at::Tensor txt_ids;                // [T, 3]
  // Optional: FluxTransformer::Rope(txt_ids, img_ids, device) computed
  // ahead (the ids do not change between steps, so a pipeline computes the
  // tables once per request); computed by Forward when image_cos is
  // undefined.
  FluxRopeTables rope;
};

// The pieces of the model one rank holds. Blocks are numbered over the
// double-stream blocks, then the single-stream blocks. time_text_embed is
// always held (every stage needs the conditioning vector).
struct FluxPart {
  int first_block = 0;
  int end_block = -1;     // one past the last block held; -1: through the last
  bool embedders = true;  // x_embedder and context_embedder
  bool head = true;       // norm_out and proj_out
};

// Hidden states between blocks: the text stream (undefined in a PipeFusion
// patch that carries no text) and the image tokens.
struct FluxHidden {
  at::Tensor context;  // [B, T, inner_dim]
  at::Tensor x;        // [B, S, inner_dim]
};

// One step's conditioning: the AdaLN modulation of every held block and of
// the head, each a Linear(SiLU(temb)) of the step's TimeEmbedding, computed
// once here instead of once per block call (a PipeFusion stage runs its
// blocks once per patch). Filled by FluxTransformer::Condition and read only
// by the model that filled it.
struct FluxConditioning {
  std::vector<at::Tensor> blocks;         // per held block, in RunBlocks order
  std::vector<at::Tensor> blocks_context; // norm1_context's (double blocks; undefined for single)
  at::Tensor head;                        // norm_out's (undefined without the head)
};

// Immutable after loading; the methods are thread-compatible (no shared
// state beyond the weights; FluxAttention state belongs to the caller).
// Autograd: nothing here disables gradients; callers that only infer hold
// an at::NoGradGuard.
class FluxTransformer {
 public:
  // Parameters of `part` in `dtype` on CPU: initialised as torch::nn's
  // layers are (kTorchDefault; the random draws happen in float32), or left
  // uninitialised for a load that fills every one (kUninitialized).
  // INVALID_ARGUMENT when the part's blocks are out of range.
  static absl::StatusOr<std::unique_ptr<FluxTransformer>> Create(
      const FluxTransformerConfig& config, at::ScalarType dtype, const FluxPart& part = {},
      models::ParameterInit init = models::ParameterInit::kTorchDefault);
  ~FluxTransformer();

  torch::nn::Module& module();
  const FluxTransformerConfig& config() const;
  // The part held, with end_block resolved.
  const FluxPart& part() const;
  int num_blocks() const;  // num_layers + num_single_layers

  // The whole model (needs every part), serial attention: the noise
  // (velocity) prediction [B, S, out_channels]. INVALID_ARGUMENT on inputs
  // whose shapes do not fit the config.
  absl::StatusOr<at::Tensor> Forward(const FluxInputs& inputs) const;

  // The pieces. Inputs are trusted (Forward checks shapes).
  // Conditioning vector [B, inner_dim]; timestep and guidance as in FluxInputs.
  at::Tensor TimeEmbedding(const at::Tensor& timestep, const at::Tensor& guidance,
                           const at::Tensor& pooled_projections) const;
  // Every modulation derived from temb (see FluxConditioning).
  FluxConditioning Condition(const at::Tensor& temb) const;
  // Embeds packed latents [B, S, in_channels] and (if defined) the T5 output.
  FluxHidden Embed(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states) const;
  // Runs the blocks of this part in order; `attention` sees global block
  // indices. INVALID_ARGUMENT when `conditioning` does not cover this
  // part's blocks (it must come from this model's Condition).
  absl::Status RunBlocks(FluxHidden& hidden, const FluxConditioning& conditioning, const FluxRopeTables& rope,
                         FluxAttention& attention) const;
  // Final norm and projection: [B, S, out_channels]; `conditioning` from
  // this model's Condition (the part holds the head).
  at::Tensor Head(const at::Tensor& x, const FluxConditioning& conditioning) const;
  // RoPE tables for txt_ids [T, 3] (may be undefined) and img_ids [S, 3].
  FluxRopeTables Rope(const at::Tensor& txt_ids, const at::Tensor& img_ids, c10::Device device) const;

 private:
  struct Impl;
  explicit FluxTransformer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Flux's 3-axis rotary embedding of position ids [N, 3]: (cos, sin), each
// [N, sum(axes_dims)] float32, every frequency repeated twice (interleaved
// pairs), frequencies 1/theta^(2i/dim) per axis.
std::pair<at::Tensor, at::Tensor> FluxRope(const at::Tensor& ids, const std::vector<int>& axes_dims,
                                           double theta = 10000);

// Sinusoidal timestep embedding with 256 channels, cosines first
// (diffusers' Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)).
at::Tensor TimestepSinusoid256(const at::Tensor& timesteps);

}  // namespace ditserve::worker::flux
