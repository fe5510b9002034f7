#include "worker/device.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#if DITSERVE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace ditserve::worker {
namespace {
int CudaDeviceCount() {
#if DITSERVE_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
#else
  return 0;
#endif
}
}  // namespace

absl::StatusOr<c10::Device> ResolveDevice(const std::string& name, int local_rank) {
  if (name != "cpu" && name != "cuda" && name != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu, cuda or auto, got '", name, "'"));
  }
  if (name == "cpu") return c10::Device(c10::kCPU);
  const int gpus = CudaDeviceCount();
  if (gpus == 0) {
    if (name == "auto") return c10::Device(c10::kCPU);
    return absl::FailedPreconditionError(
        "--device=cuda but no CUDA device is available (or this build has no CUDA)");
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank % gpus));
}

}  // namespace ditserve::worker
