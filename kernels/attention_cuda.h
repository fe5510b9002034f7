#pragma once

// CUDA paths of kernels/attention.h. In builds without a CUDA LibTorch they
// return FAILED_PRECONDITION.

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "kernels/attention.h"

namespace ditserve::kernels {

// LibTorch's fused attention with the log-sum-exp: cuDNN (else flash) for f16/bf16 without
// a mask (compute capability 8.0+), memory-efficient otherwise.
absl::StatusOr<AttentionResult> CudaAttentionWithLse(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v,
                                                     const at::Tensor& key_valid, double scale);

// Our merge kernel (kernels/merge_attention.cu) on the current stream.
absl::Status CudaMergeAttentionInto(AttentionResult& acc, const AttentionResult& part);

}  // namespace ditserve::kernels
