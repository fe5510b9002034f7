#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ditserve::kernels {

// In place: (out_a, lse_a) becomes the merge of itself with (out_b, lse_b).
// out_* are contiguous float [B, S, H, D]; lse_* contiguous float [B, H, S].
// Returns the launch error, if any.
cudaError_t LaunchMergeAttention(float* out_a, float* lse_a, const float* out_b,
                                 const float* lse_b, int64_t B, int64_t S, int64_t H, int64_t D,
                                 cudaStream_t stream);

}  // namespace ditserve::kernels
