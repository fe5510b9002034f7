#pragma once

// SD3Transformer2DModel as diffusers defines it (Stable Diffusion 3 and
// 3.5: qk_norm "rms_norm" and SD3.5-medium's dual attention included).
// Parameter and buffer names equal the diffusers checkpoint keys
// ("transformer_blocks.0.attn.to_q.weight", "pos_embed.pos_embed"), so
// LoadModuleWeights(module(), checkpoint) fills it.
//
// Besides the whole-model Forward, the model runs in pieces for parallel
// generation (models::DitTransformer): tokens are the shared 2×2 packing
// (pos_embed.proj, a conv with kernel = stride = 2, is a linear on them),
// the absolute 2-D sin-cos position embedding comes from Positions and is
// added at Embed, and Head returns the output in packed order. A DitPart
// holds only some of the pieces (a PipeFusion stage): embedders =
// pos_embed + context_embedder, head = norm_out + proj_out; time_text_embed
// is always held.

#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/models/common/parameter_init.h"
#include "worker/models/sd3/sd3_config.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::sd3 {

// Immutable after loading; the methods are thread-compatible (no shared
// state beyond the weights; JointAttention state belongs to the caller).
// Autograd: nothing here disables gradients; callers that only infer hold
// an at::NoGradGuard.
class Sd3Transformer final : public models::DitTransformer {
 public:
  // Parameters of `part` in `dtype` on CPU: initialised as torch::nn's
  // layers are (kTorchDefault; the random draws happen in float32), or left
  // uninitialised for a load that fills every one (kUninitialized). The
  // position-embedding buffer (held with the embedders) is computed either
  // way, as diffusers does, and a checkpoint overwrites it.
  // INVALID_ARGUMENT when the config does not validate
  // (ValidateSd3TransformerConfig) or the part's blocks are out of range.
  static absl::StatusOr<std::unique_ptr<Sd3Transformer>> Create(
      const Sd3TransformerConfig& config, at::ScalarType dtype, const models::DitPart& part = {},
      models::ParameterInit init = models::ParameterInit::kTorchDefault);
  ~Sd3Transformer() override;

  torch::nn::Module& module() override;
  const Sd3TransformerConfig& config() const;
  const models::DitPart& part() const override;
  int num_blocks() const override;  // num_layers
  int64_t hidden_size() const override { return config().inner_dim(); }
  // The largest token grid side (rows and columns) the position embedding
  // covers: pos_embed_max_size. Positions cannot fail, so callers of the
  // pieces check rows and cols against it; Forward does.
  int max_token_rows() const { return config().pos_embed_max_size; }

  // The whole model (needs every part), serial attention: hidden_states
  // [B, in_channels, H, W] latents (H, W even, H/2 and W/2 at most
  // max_token_rows()), encoder_hidden_states [B, T, joint_attention_dim],
  // pooled_projections [B, pooled_projection_dim], timestep [B] in 0…1000
  // as diffusers' pipelines pass it (sigma·1000). Returns the velocity
  // prediction [B, out_channels, H, W]. INVALID_ARGUMENT on inputs whose
  // shapes do not fit the config; FAILED_PRECONDITION on a part.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                     const at::Tensor& pooled_projections, const at::Tensor& timestep) const;

  // The pieces (models::DitTransformer). Inputs are trusted (Forward checks
  // shapes). TimeEmbedding scales sigma as StableDiffusion3Pipeline does
  // (float32 sigma·1000, not rounded to the run dtype); `guidance` is
  // ignored (SD3 has no guidance embedding: pass it undefined).
  at::Tensor TimeEmbedding(const at::Tensor& sigma, const at::Tensor& guidance, const at::Tensor& pooled,
                           models::DitImageSize size = {}) const override;
  // blocks: norm1's modulation ([B, 6·hidden], or 9·hidden in a dual-
  // attention block); blocks_context: norm1_context's ([B, 6·hidden], or
  // 2·hidden in the last block); head: norm_out's.
  models::DitConditioning Condition(const at::Tensor& temb) const override;
  // image_embedding: rows [image_begin, image_end) of the position
  // embedding of a rows × cols token grid (pos_embed.pos_embed cropped at
  // its centre), [image_end - image_begin, hidden] in the run dtype on
  // `device`; undefined when the part holds no embedders (only Embed reads
  // it). rows and cols must be at most max_token_rows(). No text positions.
  models::DitPositions Positions(int64_t text_tokens, int64_t rows, int64_t cols, int64_t image_begin,
                                 int64_t image_end, c10::Device device) const override;
  // x = pos_embed.proj(latents) + positions.image_embedding (which must
  // match the latents' tokens); context = context_embedder(text).
  models::DitHidden Embed(const at::Tensor& latents, const at::Tensor& text, const models::DitPositions& positions,
                          const at::Tensor& text_mask = {}) const override;
  // Joint attention of block i is layer i, the dual (image-only) attention
  // of block i layer num_blocks() + i. The last block consumes the text
  // stream: hidden.context is undefined after it.
  absl::Status RunBlockSpan(models::DitHidden& hidden, const models::DitConditioning& conditioning,
                            const models::DitPositions& positions, models::JointAttention& attention,
                            BlockSpan span) const override;
  at::Tensor FirstBlockModulatedInput(const models::DitHidden& hidden,
                                      const models::DitConditioning& conditioning) const override;
  at::Tensor Head(const at::Tensor& x, const models::DitConditioning& conditioning) const override;

  // Conditioning vector [B, hidden] of a timestep already in 0…1000
  // (Forward's `timestep`).
  at::Tensor TimestepEmbedding(const at::Tensor& timestep, const at::Tensor& pooled_projections) const;

 private:
  struct Impl;
  explicit Sd3Transformer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// diffusers' get_2d_sincos_pos_embed(dim, grid, base_size, interpolation_scale 1)
// for a grid × grid token grid: [grid·grid, dim] float32, row-major; each
// token's first dim/2 channels encode its column, the rest its row, each
// half sines then cosines. dim must be a multiple of 4.
at::Tensor Sd3PositionEmbedding(int64_t dim, int64_t grid, double base_size);

}  // namespace ditserve::worker::sd3
