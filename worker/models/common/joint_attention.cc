#include "worker/models/common/joint_attention.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "kernels/attention.h"

namespace ditserve::worker::models {

absl::StatusOr<at::Tensor> SerialAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const bool training = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (training || q.is_cuda()) {
    // No log-sum-exp needed: LibTorch picks its fastest kernel (on CUDA
    // cuDNN or flash attention) and keeps the input dtype.
    return at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2);
  }
  auto r = kernels::AttentionWithLse(q, k, v, at::Tensor());
  if (!r.ok()) return r.status();
  return r->out.to(q.scalar_type());
}

absl::StatusOr<at::Tensor> JointAttention::AttendText(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v) const {
  at::Tensor valid;
  if (text_mask_.defined()) {
    if (text_mask_.size(0) != k.size(0) || text_mask_.size(1) != k.size(1)) {
      return absl::InvalidArgumentError("cross-attention: the text mask does not match the text keys");
    }
    valid = text_mask_.to(k.device(), at::kBool);
  }
  auto r = kernels::AttentionWithLse(q, k, v, valid);
  if (!r.ok()) return r.status();
  return r->out.to(q.scalar_type());
}

absl::StatusOr<JointAttentionOutputs> SerialJointAttention::Attend(int /*layer*/, const Qkv& text, const Qkv& image) {
  if (!text.q.defined()) {
    auto out = SerialAttention(image.q, image.k, image.v);
    if (!out.ok()) return out.status();
    return JointAttentionOutputs{at::Tensor(), *out};
  }
  auto out = SerialAttention(at::cat({text.q, image.q}, 1), at::cat({text.k, image.k}, 1),
                             at::cat({text.v, image.v}, 1));
  if (!out.ok()) return out.status();
  const int64_t T = text.q.size(1);
  return JointAttentionOutputs{out->narrow(1, 0, T), out->narrow(1, T, image.q.size(1))};
}

absl::StatusOr<at::Tensor> SerialJointAttention::AttendImage(int /*layer*/, const Qkv& image) {
  return SerialAttention(image.q, image.k, image.v);
}

}  // namespace ditserve::worker::models
