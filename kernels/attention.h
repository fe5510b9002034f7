#pragma once

// Attention that also returns the log-sum-exp of each query's scores, and
// the merge of two partial attention results by their log-sum-exp (the
// online-softmax rule). Ring attention is built from these two.
//
// Layout: q [B, Sq, H, D], k and v [B, Sk, H, D] (sequence-major, as the
// models hold tokens); out [B, Sq, H, D] float32; lse [B, H, Sq] float32.
// CPU tensors run on LibTorch's fused CPU flash attention; CUDA tensors (CUDA
// builds) on its cuDNN or flash attention (half precision, no mask) or
// memory-efficient attention (otherwise), and our merge kernel.

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace ditserve::kernels {

struct AttentionResult {
  at::Tensor out;  // [B, Sq, H, D] float32
  at::Tensor lse;  // [B, H, Sq] float32; -inf for a query with no valid key
};

struct AttentionOptions {
  // Softmax scale; 0 means 1/sqrt(D).
  double scale = 0;
};

// softmax(q·kᵀ·scale) · v with the scores of invalid keys (key_valid[b, j]
// false; undefined key_valid means all valid) excluded. Inputs may be f32,
// f16 or bf16; accumulation is in f32. A query whose keys are all invalid
// gets out 0 and lse -inf. INVALID_ARGUMENT on mismatched shapes, dtypes or
// devices.
absl::StatusOr<AttentionResult> AttentionWithLse(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, const at::Tensor& key_valid,
                                                 const AttentionOptions& options = {});

// Merges `part` into `acc` in place, as if the keys of both had been attended
// together: lse = log(e^lse_a + e^lse_b), out = out_a·e^(lse_a-lse) +
// out_b·e^(lse_b-lse). Stable for any magnitudes; -inf on both sides gives
// out 0, lse -inf. An undefined acc takes part. INVALID_ARGUMENT on shape
// mismatch. On CPU acc.out is updated in place (an acc that took a part
// shares that part's tensors).
absl::Status MergeAttentionInto(AttentionResult& acc, const AttentionResult& part);

// The out-of-place float32 reference of the merge, kept independent of
// MergeAttentionInto's in-place CPU path (the CUDA test checks against it).
AttentionResult MergeAttentionReference(const AttentionResult& a, const AttentionResult& b);

}  // namespace ditserve::kernels
