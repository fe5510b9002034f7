// CUDA glue: built only against a CUDA LibTorch.
#include "kernels/attention_cuda.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/merge_attention.cuh"

namespace ditserve::kernels {
namespace {

// LibTorch's cuDNN and flash kernels take f16/bf16 with a head size that is
// a multiple of 8 up to 256 (flash: compute capability 8.0 or newer).
bool HalfPrecisionKernelFits(const at::Tensor& q) {
  const int64_t D = q.size(3);
  if (q.scalar_type() != at::kHalf && q.scalar_type() != at::kBFloat16) return false;
  if (D % 8 != 0 || D > 256) return false;
  return at::cuda::getDeviceProperties(q.get_device())->major >= 8;
}

// Unmasked half precision: cuDNN's fused attention (2x flash on an H200 at
// S 4608, 24 x 128: bench/flux_vs_diffusers.py sdpa), or FlashAttention-2
// where this cuDNN build refuses the shape. Inputs [B, H, S, D]; lse
// [B, H, Sq].
std::pair<at::Tensor, at::Tensor> UnmaskedHalfAttention(const at::Tensor& qh, const at::Tensor& kh,
                                                        const at::Tensor& vh, double scale) {
  try {
    auto r = at::_scaled_dot_product_cudnn_attention(qh, kh, vh, /*attn_bias=*/std::nullopt,
                                                     /*compute_log_sumexp=*/true, /*dropout_p=*/0.0,
                                                     /*is_causal=*/false, /*return_debug_mask=*/false, scale);
    return {std::get<0>(r), std::get<1>(r).reshape({qh.size(0), qh.size(1), qh.size(2)})};
  } catch (const c10::Error&) {
    auto r = at::_scaled_dot_product_flash_attention(qh, kh, vh, /*dropout_p=*/0.0, /*is_causal=*/false,
                                                     /*return_debug_mask=*/false, scale);
    return {std::get<0>(r), std::get<1>(r)};
  }
}

}  // namespace

absl::StatusOr<AttentionResult> CudaAttentionWithLse(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v,
                                                     const at::Tensor& key_valid, double scale) {
  c10::cuda::CUDAGuard guard(q.device());
  try {
    // [B, S, H, D] -> [B, H, S, D], the fused kernels' layout.
    const at::Tensor qh = q.transpose(1, 2);
    const at::Tensor kh = k.transpose(1, 2);
    const at::Tensor vh = v.transpose(1, 2);
    std::optional<at::Tensor> bias;
    if (key_valid.defined()) {
      // Additive bias [B, H, Sq, Sk] (broadcast views of [B, 1, 1, Sk]); -inf
      // on invalid keys. The fused kernel wants the batch stride aligned to
      // 16 elements, so the key dimension is allocated padded.
      const int64_t Sk = k.size(1), padded = (Sk + 15) / 16 * 16;
      at::Tensor b = at::zeros({q.size(0), 1, 1, padded}, q.options()).narrow(3, 0, Sk);
      b.masked_fill_(key_valid.logical_not().view({q.size(0), 1, 1, Sk}),
                     -std::numeric_limits<float>::infinity());
      bias = b.expand({q.size(0), q.size(2), q.size(1), k.size(1)});
    }
    at::Tensor out, lse;
    if (!bias && HalfPrecisionKernelFits(q)) {
      std::tie(out, lse) = UnmaskedHalfAttention(qh, kh, vh, scale);
    } else {
      auto result = at::_scaled_dot_product_efficient_attention(
          qh, kh, vh, bias, /*compute_log_sumexp=*/true, /*dropout_p=*/0.0, /*is_causal=*/false,
          scale);
      out = std::get<0>(result);
      lse = std::get<1>(result).narrow(2, 0, q.size(1));  // rows padded to 32
    }
    out = out.transpose(1, 2).to(at::kFloat).contiguous();
    lse = lse.to(at::kFloat).contiguous();
    if (key_valid.defined()) {
      // Queries with no valid key: out 0, lse -inf (the fused kernel's value
      // for them is not specified).
      at::Tensor none = key_valid.logical_not().all(1).view({q.size(0), 1, 1});  // [B,1,1]
      lse.masked_fill_(none, -std::numeric_limits<float>::infinity());
      out.masked_fill_(none.view({q.size(0), 1, 1, 1}), 0.0);
    }
    return AttentionResult{out, lse};
  } catch (const std::exception& e) {
    std::string what = e.what();
    return absl::InternalError(absl::StrCat("CUDA attention failed: ", what.substr(0, what.find('\n'))));
  }
}

absl::Status CudaMergeAttentionInto(AttentionResult& acc, const AttentionResult& part) {
  c10::cuda::CUDAGuard guard(acc.out.device());
  if (!acc.out.is_contiguous() || !acc.lse.is_contiguous() || acc.out.scalar_type() != at::kFloat) {
    acc.out = acc.out.to(at::kFloat).contiguous();
    acc.lse = acc.lse.to(at::kFloat).contiguous();
  }
  const at::Tensor ob = part.out.to(at::kFloat).contiguous();
  const at::Tensor lb = part.lse.to(at::kFloat).contiguous();
  const cudaError_t err = LaunchMergeAttention(
      acc.out.data_ptr<float>(), acc.lse.data_ptr<float>(), ob.data_ptr<float>(),
      lb.data_ptr<float>(), acc.out.size(0), acc.out.size(1), acc.out.size(2), acc.out.size(3),
      c10::cuda::getCurrentCUDAStream(acc.out.get_device()).stream());
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("merge kernel launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace ditserve::kernels
