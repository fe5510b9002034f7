#include "kernels/merge_attention.cuh"

#include <math.h>

namespace ditserve::kernels {
namespace {

// One block per (b, s, h) row: the first thread computes the weights, all
// threads scale the D values. lse_a is rewritten after the row is read.
__global__ void MergeKernel(float* out_a, float* lse_a, const float* out_b, const float* lse_b,
                            int64_t S, int64_t H, int64_t D) {
  const int64_t row = blockIdx.x;  // (b, s, h) in [B, S, H] order
  const int64_t h = row % H;
  const int64_t s = (row / H) % S;
  const int64_t b = row / (H * S);
  const int64_t lse_index = (b * H + h) * S + s;
  const float la = lse_a[lse_index];
  const float lb = lse_b[lse_index];
  const float m = fmaxf(la, lb);
  const float shift = isinf(m) && m < 0 ? 0.f : m;
  const float ea = expf(la - shift);
  const float eb = expf(lb - shift);
  const float sum = ea + eb;
  const float wa = sum > 0.f ? ea / sum : 0.f;
  const float wb = sum > 0.f ? eb / sum : 0.f;
  float* oa = out_a + row * D;
  const float* ob = out_b + row * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) oa[d] = oa[d] * wa + ob[d] * wb;
  __syncthreads();
  if (threadIdx.x == 0) lse_a[lse_index] = shift + logf(sum);
}

}  // namespace

cudaError_t LaunchMergeAttention(float* out_a, float* lse_a, const float* out_b,
                                 const float* lse_b, int64_t B, int64_t S, int64_t H, int64_t D,
                                 cudaStream_t stream) {
  const int64_t rows = B * S * H;
  if (rows == 0) return cudaSuccess;
  const int threads = D >= 128 ? 128 : (D >= 64 ? 64 : 32);
  MergeKernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(out_a, lse_a, out_b, lse_b, S, H, D);
  return cudaGetLastError();
}

}  // namespace ditserve::kernels
