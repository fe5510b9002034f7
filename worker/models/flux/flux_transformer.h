#pragma once

// FluxTransformer2DModel as diffusers defines it. Parameter names equal the
// diffusers checkpoint keys ("transformer_blocks.0.attn.to_q.weight"), so
// LoadModuleWeights(module(), checkpoint) fills it.

#include <memory>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "worker/models/flux/flux_config.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::flux {

struct FluxInputs {
  at::Tensor hidden_states;          // [B, S, in_channels]: packed 2x2 latents
  at::Tensor encoder_hidden_states;  // [B, T, joint_attention_dim]: T5 output
  at::Tensor pooled_projections;     // [B, pooled_projection_dim]: CLIP pooled
  at::Tensor timestep;               // [B]: sigma in [0, 1] (scaled by 1000 inside)
  at::Tensor guidance;               // [B] (guidance_embeds models) or undefined
  at::Tensor img_ids;                // [S, 3]
  at::Tensor txt_ids;                // [T, 3]
};

// Immutable after loading; Forward is thread-compatible (no shared state
// beyond the weights).
class FluxTransformer {
 public:
  // Parameters in `dtype` on CPU, zero-initialised until loaded.
  static absl::StatusOr<std::unique_ptr<FluxTransformer>> Create(const FluxTransformerConfig& config,
                                                                 at::ScalarType dtype);
  ~FluxTransformer();

  torch::nn::Module& module();
  const FluxTransformerConfig& config() const;

  // The noise (velocity) prediction [B, S, out_channels]. INVALID_ARGUMENT
  // on inputs whose shapes do not fit the config.
  absl::StatusOr<at::Tensor> Forward(const FluxInputs& inputs) const;

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
