#pragma once

// PixArtTransformer2DModel as diffusers defines it (PixArt-α and PixArt-Σ):
// a conv patch embedding with 2-D sin-cos positions, adaLN-single (one
// timestep embedding, six modulations, a learned table per block), self-
// attention over the image tokens, cross-attention to the caption-projected
// T5 states under the T5 padding mask, and a tanh-GELU feed-forward.
// Parameter names equal the diffusers checkpoint keys
// ("transformer_blocks.0.attn2.to_k.weight", "adaln_single.linear.weight"),
// so LoadModuleWeights(module(), checkpoint) fills it.
//
// As a models::DitTransformer: tokens are the shared 2×2 packing
// (pos_embed.proj is a linear on them), Positions gives the sin-cos
// embedding of a token range (added at Embed), the text stream is the
// caption projection (context, unchanged by the blocks), and Head returns
// the noise prediction in packed order without the learned-variance
// channels (the pipelines keep only the first in_channels). Self-attention
// of block i is layer i; its cross-attention keys and values are computed
// once per call and kept in the JointAttention (TextKv).

#include <cstdint>
#include <memory>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/models/common/parameter_init.h"
#include "worker/models/pixart/pixart_config.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::pixart {

// Immutable after loading; the methods are thread-compatible.
class PixArtTransformer final : public models::DitTransformer {
 public:
  // Parameters of `part` in `dtype` on CPU, initialised as torch::nn's
  // layers are (kTorchDefault) or left for a load (kUninitialized).
  // INVALID_ARGUMENT for an invalid config or a part out of range.
  static absl::StatusOr<std::unique_ptr<PixArtTransformer>> Create(
      const PixArtTransformerConfig& config, at::ScalarType dtype, const models::DitPart& part = {},
      models::ParameterInit init = models::ParameterInit::kTorchDefault);
  ~PixArtTransformer() override;

  torch::nn::Module& module() override;
  const PixArtTransformerConfig& config() const;
  const models::DitPart& part() const override;
  int num_blocks() const override;
  int64_t hidden_size() const override { return config().inner_dim(); }

  // The whole model, serial attention, as diffusers' forward: latents
  // [B, in_channels, H, W] (H, W even), encoder_hidden_states
  // [B, T, caption_channels], encoder_attention_mask [B, T] (1 keep, 0
  // drop; undefined: none), timestep [B] in 0…1000, and with additional
  // conditions `size` (the pixel height and width; aspect ratio h/w).
  // Returns [B, out_channels, H, W] (learned-variance channels included).
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                     const at::Tensor& encoder_attention_mask, const at::Tensor& timestep,
                                     models::DitImageSize size = {}) const;

  // The pieces. TimeEmbedding takes the discrete timestep (0…1000) as
  // the pipelines pass it; `guidance` and `pooled` are unused (PixArt has
  // neither); `size` feeds the micro-conditions when the config uses them.
  at::Tensor TimeEmbedding(const at::Tensor& time, const at::Tensor& guidance, const at::Tensor& pooled,
                           models::DitImageSize size = {}) const override;
  // blocks: each block's six modulations [B, 6·hidden] (its table added);
  // head: shift and scale [B, 2·hidden].
  models::DitConditioning Condition(const at::Tensor& temb) const override;
  // image_embedding: rows [image_begin, image_end) of the sin-cos embedding
  // of a rows × cols grid (float32 → run dtype, on `device`); undefined
  // without the embedders.
  models::DitPositions Positions(int64_t text_tokens, int64_t rows, int64_t cols, int64_t image_begin,
                                 int64_t image_end, c10::Device device) const override;
  models::DitHidden Embed(const at::Tensor& latents, const at::Tensor& text, const models::DitPositions& positions,
                          const at::Tensor& text_mask = {}) const override;
  absl::Status RunBlockSpan(models::DitHidden& hidden, const models::DitConditioning& conditioning,
                            const models::DitPositions& positions, models::JointAttention& attention,
                            BlockSpan span) const override;
  at::Tensor FirstBlockModulatedInput(const models::DitHidden& hidden,
                                      const models::DitConditioning& conditioning) const override;
  // The first in_channels output channels per token, packed (channel, dy, dx).
  at::Tensor Head(const at::Tensor& x, const models::DitConditioning& conditioning) const override;

 private:
  struct Impl;
  explicit PixArtTransformer(std::unique_ptr<Impl> impl);
  // proj_out's output, every out channel, in the checkpoint's (dy, dx, c) order.
  at::Tensor HeadAll(const at::Tensor& x, const models::DitConditioning& conditioning) const;
  std::unique_ptr<Impl> impl_;
};

// diffusers' get_2d_sincos_pos_embed(dim, (rows, cols), base_size,
// interpolation_scale): [rows·cols, dim] float32, row-major; each token's
// first dim/2 channels encode its column, the rest its row.
at::Tensor PixArtPositionEmbedding(int64_t dim, int64_t rows, int64_t cols, double base_size,
                                   double interpolation_scale);

}  // namespace ditserve::worker::pixart
