#pragma once

// The transformer of a DiT family, as the family-neutral pipelines run it:
// in pieces (TimeEmbedding, Condition, Positions, Embed, RunBlocks through a
// JointAttention, Head), so that a rank can hold only some blocks (a
// PipeFusion stage) and run them on some tokens (a patch, a sequence-
// parallel shard).
//
// Token layout shared by every family: the latent image [C, h, w] is cut
// into 2×2 patches, rows × columns = (h/2) × (w/2) tokens in row-major
// order, each token the 4C values of its patch in (channel, dy, dx) order
// (Flux's packing; a conv patch embedding with kernel = stride = 2 is the
// same product). Families whose checkpoints order the head's output
// differently reorder it inside Head.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/models/common/joint_attention.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::models {

// Blocks are numbered 0 … num_blocks()-1 in the order they run.
struct DitPart {
  int first_block = 0;
  int end_block = -1;     // one past the last block held; -1: through the last
  bool embedders = true;  // the image and text embedders
  bool head = true;       // the final norm and projection
};

// The pixel size of the image a call generates.
struct DitImageSize {
  int64_t height = 0;
  int64_t width = 0;
};

// Hidden states between blocks: the text stream (undefined in a PipeFusion
// patch that carries no text, or after a family's last block consumed it),
// the image tokens and, for families with long skip connections
// (HunyuanDiT), the stack of block outputs that later blocks still take,
// oldest first, each shaped as x (DitTransformer::SkipsBefore says how many
// are held between two blocks; a PipeFusion stage boundary carries them).
struct DitHidden {
  at::Tensor context;  // [B, T, context_size()]
  at::Tensor x;        // [B, S, hidden_size]
  std::vector<at::Tensor> skips;
};

// One step's conditioning: the AdaLN modulation of every held block and of
// the head, computed once per step from the TimeEmbedding (a PipeFusion
// stage runs its blocks once per patch). Filled by Condition and read only
// by the model that filled it.
struct DitConditioning {
  std::vector<at::Tensor> blocks;          // per held block, in RunBlocks order
  std::vector<at::Tensor> blocks_context;  // per held block; undefined where a block has none
  at::Tensor head;                         // undefined without the head
};

// The positional inputs of one call's tokens, filled by Positions: RoPE
// tables (cos, sin) [N, head_dim] float32 for families with rotary
// positions (Flux), or the absolute embedding [S, hidden] added to the
// image tokens at Embed (SD3). Unused fields stay undefined.
struct DitPositions {
  at::Tensor text_cos, text_sin, image_cos, image_sin;
  at::Tensor image_embedding;
};

// Immutable after loading; the methods are thread-compatible (no state
// beyond the weights; JointAttention state belongs to the caller).
class DitTransformer {
 public:
  virtual ~DitTransformer() = default;

  virtual torch::nn::Module& module() = 0;
  // The part held, with end_block resolved.
  virtual const DitPart& part() const = 0;
  virtual int num_blocks() const = 0;
  // Width of x between blocks (what PipeFusion stages pass).
  virtual int64_t hidden_size() const = 0;
  // Width of the context between blocks: hidden_size() unless the family's
  // text stream stays at its own width (HunyuanDiT: cross_attention_dim).
  virtual int64_t context_size() const { return hidden_size(); }

  // Conditioning vector [B, hidden] for the step at model time `time`
  // (float32 [B]: the schedule's model_times, core/denoising_schedule.h —
  // the flow-matching sigma in [0, 1] for Flux and SD3, which each scales
  // and rounds as its diffusers pipeline does; the discrete timestep in
  // [0, 1000) for the DDPM-trained families), `guidance` ([B] or undefined:
  // guidance-embedding models only), the pooled text embedding [B, pooled]
  // and the image size in pixels (PixArt-α's micro-conditions).
  virtual at::Tensor TimeEmbedding(const at::Tensor& time, const at::Tensor& guidance, const at::Tensor& pooled,
                                   DitImageSize size = {}) const = 0;
  // Every modulation derived from temb (see DitConditioning).
  virtual DitConditioning Condition(const at::Tensor& temb) const = 0;
  // Positions of `text_tokens` text tokens (0: the call carries none) and of
  // image tokens [image_begin, image_end) of a rows × cols token grid.
  virtual DitPositions Positions(int64_t text_tokens, int64_t rows, int64_t cols, int64_t image_begin,
                                 int64_t image_end, c10::Device device) const = 0;
  // Embeds packed latents [B, S, 4C] and (if defined) the text sequence
  // [B, T, text_dim]; the part must hold the embedders.
  // `text_mask` [B, T] (1 a real token, 0 padding; undefined: all real)
  // comes with the text for the families whose embedder reads it
  // (HunyuanDiT puts a learned embedding at the padding).
  virtual DitHidden Embed(const at::Tensor& latents, const at::Tensor& text, const DitPositions& positions,
                          const at::Tensor& text_mask = {}) const = 0;
  // The pooled text vector [B, pooled] that TimeEmbedding takes, for the
  // families whose transformer computes it from the text sequence [B, T,
  // text_dim] (HunyuanDiT's attention pool over the mT5 states): once per
  // request. Undefined for the others (their text encoder pools).
  virtual at::Tensor PooledText(const at::Tensor& /*sequence*/) const { return at::Tensor(); }
  // Long-skip activations DitHidden holds when global block `block` starts
  // (0 for families without long skips; block = num_blocks(): after the
  // last).
  virtual int SkipsBefore(int /*block*/) const { return 0; }
  // Runs the held blocks in order. INVALID_ARGUMENT when `conditioning`
  // does not cover them (it must come from this model's Condition).
  absl::Status RunBlocks(DitHidden& hidden, const DitConditioning& conditioning, const DitPositions& positions,
                         JointAttention& attention) const {
    return RunBlockSpan(hidden, conditioning, positions, attention, BlockSpan{});
  }
  // Runs held blocks [span.begin, span.end) (local indices, RunBlocks
  // order): running [0, k) and then [k, end) is RunBlocks, bit for bit (the
  // step cache runs the first block alone). INVALID_ARGUMENT as RunBlocks,
  // or for a span outside the held blocks.
  struct BlockSpan {
    int begin = 0;
    int end = -1;  // -1: through the last held block
  };
  virtual absl::Status RunBlockSpan(DitHidden& hidden, const DitConditioning& conditioning,
                                    const DitPositions& positions, JointAttention& attention,
                                    BlockSpan span) const = 0;
  // The first block's modulated image input, norm1(x)·(1 + scale) + shift
  // with its attention's shift and scale: TeaCache's signal. The part must
  // hold block 0; `hidden` is Embed's output.
  virtual at::Tensor FirstBlockModulatedInput(const DitHidden& hidden, const DitConditioning& conditioning) const = 0;
  // Final norm and projection: the model output [B, S, 4C] in packed order;
  // the part must hold the head.
  virtual at::Tensor Head(const at::Tensor& x, const DitConditioning& conditioning) const = 0;
};

// `part` with end_block resolved against the model's `num_blocks`;
// INVALID_ARGUMENT "<family>: blocks [first, end) are outside the model's N
// blocks" when it does not fit. Every family's Create.
absl::StatusOr<DitPart> ResolvePart(const char* family, DitPart part, int num_blocks);

// The end of `span` over the `held` blocks of a part (span.end -1: all of
// them), when `conditioning` covers exactly those blocks (blocks and
// blocks_context) and the span lies inside them; INVALID_ARGUMENT naming
// `family` otherwise. Every family's RunBlockSpan.
absl::StatusOr<int> HeldSpanEnd(const char* family, const DitConditioning& conditioning, int held,
                                DitTransformer::BlockSpan span);

// Sinusoidal timestep embedding with 256 channels, cosines first
// (diffusers' Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)),
// float32 [B, 256]: the time embedding input of the MMDiT families.
at::Tensor TimestepSinusoid256(const at::Tensor& timesteps);

}  // namespace ditserve::worker::models
