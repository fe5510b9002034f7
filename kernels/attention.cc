#include "kernels/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

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

AttentionResult CpuAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& key_valid, double scale, int64_t max_score_bytes) {
  const int64_t B = q.size(0), Sq = q.size(1), H = q.size(2), D = q.size(3), Sk = k.size(1);
  // [B, H, S, D] in f32.
  const at::Tensor qf = q.to(at::kFloat).permute({0, 2, 1, 3});
  const at::Tensor kt = k.to(at::kFloat).permute({0, 2, 3, 1}).contiguous();  // [B, H, D, Sk]
  const at::Tensor vf = v.to(at::kFloat).permute({0, 2, 1, 3}).contiguous();  // [B, H, Sk, D]
  at::Tensor invalid;
  if (key_valid.defined()) invalid = key_valid.logical_not().view({B, 1, 1, Sk});
  at::Tensor out = at::empty({B, H, Sq, D}, qf.options());
  at::Tensor lse = at::empty({B, H, Sq}, qf.options());
  const int64_t row_bytes = std::max<int64_t>(1, B * H * Sk * 4);
  const int64_t block = std::clamp<int64_t>(max_score_bytes / row_bytes, 1, std::max<int64_t>(Sq, 1));
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t start = 0; start < Sq; start += block) {
    const int64_t len = std::min(block, Sq - start);
    at::Tensor s = at::matmul(qf.narrow(2, start, len), kt).mul_(scale);  // [B, H, len, Sk]
    if (invalid.defined()) s.masked_fill_(invalid, neg_inf);
    at::Tensor m = std::get<0>(s.max(-1, /*keepdim=*/true));
    // Rows with no valid key: use 0 as the shift so exp gives 0, not NaN.
    m.masked_fill_(m.isneginf(), 0.0);
    s.sub_(m).exp_();
    at::Tensor l = s.sum(-1, /*keepdim=*/true);  // [B, H, len, 1]
    at::Tensor o = at::matmul(s, vf).div_(l.clamp_min(std::numeric_limits<float>::min()));
    out.narrow(2, start, len).copy_(o);
    lse.narrow(2, start, len).copy_((m + l.log()).squeeze(-1));
  }
  return {out.permute({0, 2, 1, 3}).contiguous(), lse};
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
  return CpuAttention(q, k, v, key_valid, scale, std::max<int64_t>(options.max_score_bytes, 1));
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
  acc = MergeAttentionReference(acc, part);
  return absl::OkStatus();
}

}  // namespace ditserve::kernels
