#include "worker/models/flux/flux_attention.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "kernels/attention.h"

namespace ditserve::worker::flux {

absl::StatusOr<FluxAttentionOutputs> SerialFluxAttention::Attend(int /*layer*/, const FluxQkv& text,
                                                                 const FluxQkv& image) {
  const bool has_text = text.q.defined();
  const at::Tensor q = has_text ? at::cat({text.q, image.q}, 1) : image.q;
  const at::Tensor k = has_text ? at::cat({text.k, image.k}, 1) : image.k;
  const at::Tensor v = has_text ? at::cat({text.v, image.v}, 1) : image.v;
  at::Tensor out;
  const bool training = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (training || q.is_cuda()) {
    // No log-sum-exp needed: LibTorch picks its fastest kernel (on CUDA
    // cuDNN or flash attention) and keeps the input dtype.
    out = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
              .transpose(1, 2);
  } else {
    auto r = kernels::AttentionWithLse(q, k, v, at::Tensor());
    if (!r.ok()) return r.status();
    out = r->out.to(q.scalar_type());
  }
  if (!has_text) return FluxAttentionOutputs{at::Tensor(), out};
  const int64_t T = text.q.size(1);
  return FluxAttentionOutputs{out.narrow(1, 0, T), out.narrow(1, T, image.q.size(1))};
}

}  // namespace ditserve::worker::flux
