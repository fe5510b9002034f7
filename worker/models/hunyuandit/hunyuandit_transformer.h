#pragma once

// HunyuanDiT2DModel as diffusers defines it (HunyuanDiT v1.1 and v1.2): a
// conv patch embedding without positions, 2-D RoPE on the image tokens, a
// conditioning vector from the timestep, an attention pool over the mT5
// states and (v1.1) the image meta size and style, and blocks of
// AdaLN-shift self-attention with q/k LayerNorm, cross-attention to the
// BERT and projected mT5 states (RoPE on its queries; no mask: padding
// positions hold the learned text_embedding_padding), a tanh-GELU
// feed-forward and the long skip connections (block i > N/2 takes the
// output of block N−1−i through skip_norm and skip_linear). Parameter names
// equal the diffusers checkpoint keys ("blocks.0.attn1.norm_q.weight",
// "time_extra_emb.pooler.q_proj.weight"), so LoadModuleWeights(module(),
// checkpoint) fills it.
//
// As a models::DitTransformer: tokens are the shared 2×2 packing; the text
// sequence is HunyuanTextSequence's layout (BERT rows, then mT5 rows, in
// one tensor); Embed projects it and puts the padding embedding where the
// mask is 0 (the context, unchanged by the blocks); PooledText is the
// attention pool; the skip stack travels in DitHidden::skips; Head returns
// the prediction in packed order without the learned-variance channels.
// Self-attention of block i is layer i; its cross-attention keys and
// values are computed once per call and kept in the JointAttention.

#include <cstdint>
#include <memory>
#include <utility>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/models/common/dit_transformer.h"
#include "worker/models/common/parameter_init.h"
#include "worker/models/hunyuandit/hunyuandit_config.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::hunyuandit {

// Immutable after loading; the methods are thread-compatible.
class HunyuanDiTTransformer final : public models::DitTransformer {
 public:
  // Parameters of `part` in `dtype` on CPU, initialised as torch::nn's
  // layers are (kTorchDefault) or left for a load (kUninitialized).
  // INVALID_ARGUMENT for an invalid config or a part out of range.
  static absl::StatusOr<std::unique_ptr<HunyuanDiTTransformer>> Create(
      const HunyuanDiTConfig& config, at::ScalarType dtype, const models::DitPart& part = {},
      models::ParameterInit init = models::ParameterInit::kTorchDefault);
  ~HunyuanDiTTransformer() override;

  torch::nn::Module& module() override;
  const HunyuanDiTConfig& config() const;
  const models::DitPart& part() const override;
  int num_blocks() const override;
  int64_t hidden_size() const override { return config().inner_dim(); }
  // The context is BERT's width (the projected mT5 joins it there).
  int64_t context_size() const override { return config().cross_attention_dim; }

  // The whole model, serial attention, as diffusers' forward with
  // HunyuanDiTPipeline's RoPE, style 0 and image meta size (original size
  // 1024×1024, target `size`, crop 0, 0): latents [B, in_channels, H, W]
  // (H, W even), timestep [B], encoder_hidden_states [B, text_len,
  // cross_attention_dim] with text_embedding_mask [B, text_len] (1 keep, 0
  // pad), encoder_hidden_states_t5 [B, text_len_t5, cross_attention_dim_t5]
  // with text_embedding_mask_t5. Returns [B, out_channels, H, W] (learned-
  // variance channels included).
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& hidden_states, const at::Tensor& timestep,
                                     const at::Tensor& encoder_hidden_states, const at::Tensor& text_embedding_mask,
                                     const at::Tensor& encoder_hidden_states_t5,
                                     const at::Tensor& text_embedding_mask_t5, models::DitImageSize size = {}) const;

  // The pieces. TimeEmbedding: the discrete timestep (0…1000), `pooled`
  // from PooledText, `size` the image (v1.1's meta size); no guidance.
  at::Tensor TimeEmbedding(const at::Tensor& time, const at::Tensor& guidance, const at::Tensor& pooled,
                           models::DitImageSize size = {}) const override;
  // blocks: each block's norm1 shift [B, hidden]; head: scale and shift
  // [B, 2·hidden].
  models::DitConditioning Condition(const at::Tensor& temb) const override;
  // image_cos / image_sin: rows [image_begin, image_end) of the 2-D RoPE of
  // a rows × cols grid (HunyuanRope), on `device`.
  models::DitPositions Positions(int64_t text_tokens, int64_t rows, int64_t cols, int64_t image_begin,
                                 int64_t image_end, c10::Device device) const override;
  // text: HunyuanTextSequence's layout [B, text_tokens(), text_dim];
  // text_mask [B, text_tokens()] (undefined: every token real).
  models::DitHidden Embed(const at::Tensor& latents, const at::Tensor& text, const models::DitPositions& positions,
                          const at::Tensor& text_mask = {}) const override;
  at::Tensor PooledText(const at::Tensor& sequence) const override;
  int SkipsBefore(int block) const override;
  // As the base's, and FAILED_PRECONDITION when `hidden` does not hold the
  // SkipsBefore(first block of the span) skip activations.
  absl::Status RunBlockSpan(models::DitHidden& hidden, const models::DitConditioning& conditioning,
                            const models::DitPositions& positions, models::JointAttention& attention,
                            BlockSpan span) const override;
  // norm1(x) + shift: block 0's modulated input.
  at::Tensor FirstBlockModulatedInput(const models::DitHidden& hidden,
                                      const models::DitConditioning& conditioning) const override;
  at::Tensor Head(const at::Tensor& x, const models::DitConditioning& conditioning) const override;

 private:
  struct Impl;
  explicit HunyuanDiTTransformer(std::unique_ptr<Impl> impl);
  // proj_out's output, every out channel, in the checkpoint's (dy, dx, c) order.
  at::Tensor HeadAll(const at::Tensor& x, const models::DitConditioning& conditioning) const;
  std::unique_ptr<Impl> impl_;
};

// The width of the text sequence: max(cross_attention_dim,
// cross_attention_dim_t5).
int64_t HunyuanTextDim(const HunyuanDiTConfig& config);

// The text stream as one tensor [B, text_len + text_len_t5, HunyuanTextDim]:
// BERT's states [B, text_len, cross_attention_dim] in the first rows, mT5's
// [B, text_len_t5, cross_attention_dim_t5] after them, each zero-filled
// beyond its width.
at::Tensor HunyuanTextSequence(const HunyuanDiTConfig& config, const at::Tensor& bert, const at::Tensor& t5);

// HunyuanDiTPipeline's 2-D RoPE for a rows × cols token grid (diffusers'
// get_resize_crop_region_for_grid against a 32-token base, then
// get_2d_rotary_pos_embed): (cos, sin), each [rows·cols, head_dim] float32,
// row-major.
std::pair<at::Tensor, at::Tensor> HunyuanRope(int64_t head_dim, int64_t rows, int64_t cols);

}  // namespace ditserve::worker::hunyuandit
