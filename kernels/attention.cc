#include "kernels/attention.h"

#include <ATen/ATen.h>
#include <ATen/ops/_scaled_dot_product_flash_attention_for_cpu.h>

#include <cmath>
#include <limits>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/attention_cuda.h"

namespace ditserve::kernels {
namespace {

absl::Status CheckInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& key_valid) {
  if (!q.defined() || !k.defined() || !v.defined()) {
    return absl::InvalidArgumentError("attention: q, k and v must be defined");
  }
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention: q, k, v must be [B, S, H, D], got ", q.dim(), "-d, ", k.dim(), "-d, ",
        v.dim(), "-d"));
  }
  if (!k.sizes().equals(v.sizes()) || q.size(0) != k.size(0) || q.size(2) != k.size(2) ||
      q.size(3) != k.size(3)) {
    return absl::InvalidArgumentError(absl::StrCat("attention: shapes do not match: q ",
                                                   c10::str(q.sizes()), ", k ", c10::str(k.sizes()),
                                                   ", v ", c10::str(v.sizes())));
  }
  if (q.scalar_type() != k.scalar_type() || q.scalar_type() != v.scalar_type()) {
    return absl::InvalidArgumentError("attention: q, k, v must have one dtype");
  }
  const auto t = q.scalar_type();
  if (t != at::kFloat && t != at::kHalf && t != at::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: dtype must be f32, f16 or bf16, got ", c10::toString(t)));
  }
  if (q.device() != k.device() || q.device() != v.device()) {
    return absl::InvalidArgumentError("attention: q, k, v must be on one device");
  }
  if (key_valid.defined() &&
      (key_valid.dim() != 2 || key_valid.size(0) != k.size(0) || key_valid.size(1) != k.size(1) ||
       key_valid.scalar_type() != at::kBool)) {
    return absl::InvalidArgumentError(absl::StrCat("attention: key_valid must be bool [B, Sk] = [",
                                                   k.size(0), ", ", k.size(1), "]"));
  }
  return absl::OkStatus();
}

// LibTorch's fused CPU flash attention (blocked over queries and keys, one
// pass with an online softmax, vectorised) in float32. It takes the
// [B, S, H, D] tensors as strided [B, H, S, D] views and writes its output
// [B, Sq, H, D]-contiguous, so no layout copies are made. Invalid keys go in
// as an additive -inf mask; the kernel gives a fully masked query out 0 but
// lse 0, so such rows get lse -inf here (the merge treats them as empty).
AttentionResult CpuAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& key_valid, double scale) {
  const int64_t B = q.size(0), Sk = k.size(1);
  const auto heads_first = [](const at::Tensor& t) { return t.to(at::kFloat).transpose(1, 2); };
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::Tensor invalid;  // [B, 1, 1, Sk]
  std::optional<at::Tensor> mask;
  if (key_valid.defined()) {
    invalid = key_valid.logical_not().reshape({B, 1, 1, Sk});
    mask = at::zeros({B, 1, 1, Sk}, q.options().dtype(at::kFloat)).masked_fill_(invalid, neg_inf);
  }
  auto [out, lse] = at::_scaled_dot_product_flash_attention_for_cpu(
      heads_first(q), heads_first(k), heads_first(v), /*dropout_p=*/0.0, /*is_causal=*/false, mask,
      scale);
  if (invalid.defined()) lse.masked_fill_(invalid.all(-1), neg_inf);  // [B, 1, 1]: batches with no valid key
  return {out.transpose(1, 2).contiguous(), lse};
}

}  // namespace

absl::StatusOr<AttentionResult> AttentionWithLse(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, const at::Tensor& key_valid,
                                                 const AttentionOptions& options) {
  if (absl::Status s = CheckInputs(q, k, v, key_valid); !s.ok()) return s;
  if (options.scale < 0) return absl::InvalidArgumentError("attention: scale must be >= 0");
  const double scale = options.scale > 0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  if (q.is_cuda()) return CudaAttentionWithLse(q, k, v, key_valid, scale);
  if (!q.device().is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("attention: unsupported device ", q.device().str()));
  }
  return CpuAttention(q, k, v, key_valid, scale);
}

AttentionResult MergeAttentionReference(const AttentionResult& a, const AttentionResult& b) {
  const at::Tensor la = a.lse, lb = b.lse;
  at::Tensor m = at::maximum(la, lb);
  at::Tensor m_safe = m.masked_fill(m.isneginf(), 0.0);
  at::Tensor ea = (la - m_safe).exp(), eb = (lb - m_safe).exp();
  at::Tensor sum = ea + eb;
  at::Tensor lse = m_safe + sum.log();
  at::Tensor wa = (ea / sum.clamp_min(std::numeric_limits<float>::min()));
  at::Tensor wb = (eb / sum.clamp_min(std::numeric_limits<float>::min()));
  // [B, H, Sq] -> [B, Sq, H, 1] to weight out [B, Sq, H, D].
  wa = wa.permute({0, 2, 1}).unsqueeze(-1);
  wb = wb.permute({0, 2, 1}).unsqueeze(-1);
  return {a.out * wa + b.out * wb, lse};
}

absl::Status MergeAttentionInto(AttentionResult& acc, const AttentionResult& part) {
  if (!acc.out.defined()) {
    acc = part;
    return absl::OkStatus();
  }
  if (!acc.out.sizes().equals(part.out.sizes()) || !acc.lse.sizes().equals(part.lse.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat("merge: shapes differ: ", c10::str(acc.out.sizes()),
                                                   " vs ", c10::str(part.out.sizes())));
  }
  if (acc.out.is_cuda()) return CudaMergeAttentionInto(acc, part);
  // The weights are computed on the small [B, H, Sq] tensors; the outputs
  // take two in-place passes (scale, then add the weighted part).
  at::Tensor m = at::maximum(acc.lse, part.lse);
  m.masked_fill_(m.isneginf(), 0.0);
  at::Tensor wa = (acc.lse - m).exp_(), wb = (part.lse - m).exp_();
  at::Tensor sum = wa + wb;
  acc.lse = sum.log().add_(m);
  sum.clamp_min_(std::numeric_limits<float>::min());
  wa.div_(sum);
  wb.div_(sum);
  // [B, H, Sq] -> [B, Sq, H, 1] to weight out [B, Sq, H, D].
  acc.out.mul_(wa.permute({0, 2, 1}).unsqueeze(-1))
      .addcmul_(part.out, wb.permute({0, 2, 1}).unsqueeze(-1));
  return absl::OkStatus();
}

}  // namespace ditserve::kernels
