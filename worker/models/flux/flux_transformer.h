#pragma once

// FluxTransformer2DModel as diffusers defines it. Parameter names equal the
// diffusers checkpoint keys ("transformer_blocks.0.attn.to_q.weight"), so
// LoadModuleWeights(module(), checkpoint) fills it.
//
// Besides the whole-model Forward, the model runs in pieces for parallel
// generation (models::DitTransformer): TimeEmbedding, Condition, Positions
// (RoPE tables), Embed, RunBlocks (through a JointAttention) and Head. A
// FluxPart holds only some of the pieces (a PipeFusion stage).

#include <memory>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/models/common/parameter_init.h"
#include "worker/models/flux/flux_config.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::flux {

// Flux's names for the family-neutral pieces (worker/models/common/).
using FluxRopeTables = models::DitPositions;  // text_cos … image_sin: RoPE (cos, sin) [N, head_dim] float32
using FluxPart = models::DitPart;              // blocks: double-stream, then single-stream
using FluxHidden = models::DitHidden;
using FluxConditioning = models::DitConditioning;

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

// Immutable after loading; the methods are thread-compatible (no shared
// state beyond the weights; FluxAttention state belongs to the caller).
// Autograd: nothing here disables gradients; callers that only infer hold
// an at::NoGradGuard.
class FluxTransformer final : public models::DitTransformer {
 public:
  // Parameters of `part` in `dtype` on CPU: initialised as torch::nn's
  // layers are (kTorchDefault; the random draws happen in float32), or left
  // uninitialised for a load that fills every one (kUninitialized).
  // INVALID_ARGUMENT when the part's blocks are out of range.
  static absl::StatusOr<std::unique_ptr<FluxTransformer>> Create(
      const FluxTransformerConfig& config, at::ScalarType dtype, const FluxPart& part = {},
      models::ParameterInit init = models::ParameterInit::kTorchDefault);
  ~FluxTransformer() override;

  torch::nn::Module& module() override;
  const FluxTransformerConfig& config() const;
  const FluxPart& part() const override;
  int num_blocks() const override;  // num_layers + num_single_layers
  int64_t hidden_size() const override { return config().inner_dim(); }

  // The whole model (needs every part), serial attention: the noise
  // (velocity) prediction [B, S, out_channels]. INVALID_ARGUMENT on inputs
  // whose shapes do not fit the config.
  absl::StatusOr<at::Tensor> Forward(const FluxInputs& inputs) const;

  // The pieces (models::DitTransformer). Inputs are trusted (Forward checks
  // shapes). TimeEmbedding rounds sigma as diffusers' FluxPipeline does
  // (float32 sigma·1000 in the run dtype, ÷1000) and takes guidance in
  // guidance-scale units.
  at::Tensor TimeEmbedding(const at::Tensor& sigma, const at::Tensor& guidance, const at::Tensor& pooled,
                           models::DitImageSize size = {}) const override;
  FluxConditioning Condition(const at::Tensor& temb) const override;
  // RoPE tables: text ids are zeros, image ids (0, row, column).
  models::DitPositions Positions(int64_t text_tokens, int64_t rows, int64_t cols, int64_t image_begin,
                                 int64_t image_end, c10::Device device) const override;
  FluxHidden Embed(const at::Tensor& latents, const at::Tensor& text, const models::DitPositions& positions = {},
                   const at::Tensor& text_mask = {}) const override;
  absl::Status RunBlockSpan(FluxHidden& hidden, const FluxConditioning& conditioning, const FluxRopeTables& rope,
                            models::JointAttention& attention, BlockSpan span) const override;
  at::Tensor FirstBlockModulatedInput(const FluxHidden& hidden, const FluxConditioning& conditioning) const override;
  at::Tensor Head(const at::Tensor& x, const FluxConditioning& conditioning) const override;

  // Conditioning vector [B, inner_dim] of an already rounded timestep
  // (FluxInputs::timestep) and guidance.
  at::Tensor TimestepEmbedding(const at::Tensor& timestep, const at::Tensor& guidance,
                               const at::Tensor& pooled_projections) const;
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

using models::TimestepSinusoid256;

}  // namespace ditserve::worker::flux
