#include "worker/device.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#if DITSERVE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace ditserve::worker {

int CudaDeviceCount() {
#if DITSERVE_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
#else
  return 0;
#endif
}

absl::StatusOr<c10::Device> ResolveDevice(const std::string& name, int local_rank,
                                          int local_world_size, int gpu_count) {
  if (name != "cpu" && name != "cuda" && name != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu, cuda or auto, got '", name, "'"));
  }
  if (name == "cpu" || (name == "auto" && gpu_count == 0)) return c10::Device(c10::kCPU);
  if (gpu_count == 0) {
    return absl::FailedPreconditionError(
        "--device=cuda but no CUDA device is available (or this build has no CUDA)");
  }
  if (local_world_size > gpu_count) {
    return absl::FailedPreconditionError(absl::StrCat(
        local_world_size, " ranks on this machine but only ", gpu_count,
        " CUDA devices: NCCL needs one GPU per rank (lower --nproc, or pass --device=cpu)"));
  }
  if (local_rank < 0 || local_rank >= gpu_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("--local_rank must be in [0, ", gpu_count, "), got ", local_rank));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

}  // namespace ditserve::worker
