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

#include <map>
#include <utility>

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

  // Cross-attention of image queries to the text (PixArt, HunyuanDiT): q
  // [B, S, H, D] are this call's image tokens (a shard, a patch or all);
  // k and v [B, T, H, D] are the whole text, which every rank holds, so no
  // parallel method exchanges anything here. Padding text tokens are masked
  // by text_mask(). Output [B, S, H, D] in q's dtype.
  absl::StatusOr<at::Tensor> AttendText(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const;
  // The text keys of the batch: bool [B, T], true for a real token;
  // undefined: every token is real. Set once per call, before any layer.
  void set_text_mask(at::Tensor mask) { text_mask_ = std::move(mask); }
  const at::Tensor& text_mask() const { return text_mask_; }
  // The cross-attention keys and values of `layer`, kept for the rest of
  // the call once a block computed them: the text does not change between
  // steps, so a family computes them once per request. Null until kept.
  const std::pair<at::Tensor, at::Tensor>* TextKv(int layer) const {
    const auto it = text_kv_.find(layer);
    return it == text_kv_.end() ? nullptr : &it->second;
  }
  void KeepTextKv(int layer, at::Tensor k, at::Tensor v) { text_kv_[layer] = {std::move(k), std::move(v)}; }
  // The batch's rows changed: every layer computes its text K/V again.
  void ForgetTextKv() { text_kv_.clear(); }

 private:
  at::Tensor text_mask_;
  std::map<int, std::pair<at::Tensor, at::Tensor>> text_kv_;
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
