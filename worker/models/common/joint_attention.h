#pragma once

// The attention seam every DiT family calls and every parallel method
// implements once: a block computes q, k, v (positions applied) for its text
// tokens and its image tokens and hands them to a JointAttention, which may
// be the serial computation below or a parallel one (USP across ranks,
// PipeFusion's stale-K/V patches; see worker/pipelines/).
//
// Joint attention is over the union of text and image tokens: softmax does
// not depend on the keys' order, so whether a family puts the text in
// front of the image (Flux) or behind it (SD3) is only where it splits the
// output, and both families hand the two streams over apart.

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace ditserve::worker::models {

// [B, N, H, D] each, N tokens in sequence order.
struct Qkv {
  at::Tensor q, k, v;
};

struct JointAttentionOutputs {
  at::Tensor text;   // [B, T, H, D], undefined when the call had no text
  at::Tensor image;  // [B, S, H, D]
};

// Implementations may keep per-layer state keyed by `layer` (a family
// numbers its attention layers uniquely within one model) and are used from
// one thread.
class JointAttention {
 public:
  virtual ~JointAttention() = default;
  // MMDiT joint attention over text ∪ image. `text` may be empty (all
  // tensors undefined): a PipeFusion patch other than the first, whose
  // layer still attends the text keys kept from patch 0. Outputs are in
  // q's dtype.
  virtual absl::StatusOr<JointAttentionOutputs> Attend(int layer, const Qkv& text, const Qkv& image) = 0;
  // Self-attention over the image tokens alone (SD3.5's second attention;
  // the self-attention of cross-attention families): [B, S, H, D].
  virtual absl::StatusOr<at::Tensor> AttendImage(int layer, const Qkv& image) = 0;
};

// softmax(q·kᵀ/√D)·v in one process. Under autograd (grad mode on and an
// input requiring grad) it uses differentiable LibTorch ops; otherwise
// kernels::AttentionWithLse (on CUDA LibTorch's fused attention).
class SerialJointAttention final : public JointAttention {
 public:
  absl::StatusOr<JointAttentionOutputs> Attend(int layer, const Qkv& text, const Qkv& image) override;
  absl::StatusOr<at::Tensor> AttendImage(int layer, const Qkv& image) override;
};

// The attention of q over (k, v), serial: the computation both methods of
// SerialJointAttention make.
absl::StatusOr<at::Tensor> SerialAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace ditserve::worker::models
