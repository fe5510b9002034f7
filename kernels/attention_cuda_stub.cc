// Built when there is no CUDA LibTorch: CUDA tensors cannot exist here.
#include "absl/status/status.h"
#include "kernels/attention_cuda.h"

namespace ditserve::kernels {

absl::StatusOr<AttentionResult> CudaAttentionWithLse(const at::Tensor&, const at::Tensor&,
                                                     const at::Tensor&, const at::Tensor&, double) {
  return absl::FailedPreconditionError("attention on CUDA needs a CUDA build of ditserve");
}

absl::Status CudaMergeAttentionInto(AttentionResult&, const AttentionResult&) {
  return absl::FailedPreconditionError("merge on CUDA needs a CUDA build of ditserve");
}

}  // namespace ditserve::kernels
