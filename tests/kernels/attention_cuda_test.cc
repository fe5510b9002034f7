// CUDA attention and merge against the CPU reference, by normalised MSE
// (label gpu; skips without a GPU).

#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <limits>

#include "kernels/attention.h"

namespace ditserve::kernels {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// ||a-b||² / ||b||².
double Nmse(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.cpu().to(at::kDouble), y = b.cpu().to(at::kDouble);
  return (x - y).pow(2).sum().item<double>() / std::max(1e-30, y.pow(2).sum().item<double>());
}

TEST(CudaAttention, MatchesCpuReference) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(7);
  // Head sizes 64 (the small presets) and 128 (FLUX.1); unmasked half
  // precision takes the cuDNN kernel, the rest the memory-efficient one.
  for (at::ScalarType t : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (bool masked : {false, true}) {
      for (int64_t D : {64, 128}) {
        const at::Tensor q = at::randn({2, 333, 8, D}).to(t), k = at::randn({2, 517, 8, D}).to(t),
                         v = at::randn({2, 517, 8, D}).to(t);
        at::Tensor valid;
        if (masked) valid = at::rand({2, 517}) > 0.3;
        auto cpu = AttentionWithLse(q, k, v, valid);
        auto gpu = AttentionWithLse(q.cuda(), k.cuda(), v.cuda(), masked ? valid.cuda() : at::Tensor());
        ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status();
        const double bound = t == at::kFloat ? 1e-10 : 1e-5;
        const double out_error = Nmse(gpu->out, cpu->out), lse_error = Nmse(gpu->lse, cpu->lse);
        std::printf("%s masked=%d D=%lld: NMSE out %.3g, lse %.3g\n", c10::toString(t), masked,
                    static_cast<long long>(D), out_error, lse_error);
        EXPECT_LT(out_error, bound) << c10::toString(t) << " masked " << masked << " D " << D;
        EXPECT_LT(lse_error, bound) << c10::toString(t) << " masked " << masked << " D " << D;
      }
    }
  }
}

TEST(CudaMerge, MatchesCpuReference) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(8);
  AttentionResult a{at::randn({2, 100, 4, 128}), at::randn({2, 4, 100}) * 5};
  AttentionResult b{at::randn({2, 100, 4, 128}), at::randn({2, 4, 100}) * 5};
  a.lse[0][0][0] = -std::numeric_limits<float>::infinity();
  const AttentionResult want = MergeAttentionReference(a, b);
  AttentionResult acc{a.out.cuda(), a.lse.cuda()};
  ASSERT_TRUE(MergeAttentionInto(acc, AttentionResult{b.out.cuda(), b.lse.cuda()}).ok());
  std::printf("merge: NMSE out %.3g, lse %.3g\n", Nmse(acc.out, want.out), Nmse(acc.lse, want.lse));
  EXPECT_LT(Nmse(acc.out, want.out), 1e-12);
  EXPECT_LT(Nmse(acc.lse, want.lse), 1e-12);
}

}  // namespace
}  // namespace ditserve::kernels
