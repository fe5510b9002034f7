#pragma once

// The attention step of Flux's blocks as a seam: the transformer computes
// q, k, v (RoPE applied) and hands them to a FluxAttention, which may be
// the serial computation below or a parallel one (USP across ranks,
// PipeFusion's stale-K/V patches; see worker/pipelines/).

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace ditserve::worker::flux {

// [B, N, H, D] each, N tokens in sequence order.
struct FluxQkv {
  at::Tensor q, k, v;
};

struct FluxAttentionOutputs {
  at::Tensor text;   // [B, T, H, D], undefined when the call had no text
  at::Tensor image;  // [B, S, H, D]
};

// Joint attention over [text, image] (MMDiT): text tokens come first in
// serial order. Implementations may keep per-layer state (`layer` is the
// block index over double-stream then single-stream blocks) and are used
// from one thread.
class FluxAttention {
 public:
  virtual ~FluxAttention() = default;
  // `text` may be empty (all tensors undefined): a PipeFusion patch other
  // than the first. Outputs are in q's dtype.
  virtual absl::StatusOr<FluxAttentionOutputs> Attend(int layer, const FluxQkv& text,
                                                      const FluxQkv& image) = 0;
};

// softmax(q·kᵀ/√D)·v over the concatenation [text, image], in one process.
// Under autograd (grad mode on and an input requiring grad) it uses
// differentiable LibTorch ops; otherwise kernels::AttentionWithLse.
class SerialFluxAttention final : public FluxAttention {
 public:
  absl::StatusOr<FluxAttentionOutputs> Attend(int layer, const FluxQkv& text,
                                              const FluxQkv& image) override;
};

}  // namespace ditserve::worker::flux
