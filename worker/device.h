#pragma once

#include <string>

#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace ditserve::worker {

// The number of CUDA devices this process sees (0 without a GPU, or in a
// build without CUDA).
int CudaDeviceCount();

// Maps --device (cpu | cuda | auto) to this rank's device, given its local
// rank, the number of ranks on this machine and the GPUs present. cuda
// gives rank i GPU i; auto is cuda when there is a GPU, else cpu.
// Errors: INVALID_ARGUMENT for an unknown name; FAILED_PRECONDITION for cuda
// without a GPU, or more ranks on this machine than GPUs (NCCL refuses two
// ranks on one GPU).
absl::StatusOr<c10::Device> ResolveDevice(const std::string& name, int local_rank,
                                          int local_world_size, int gpu_count);

}  // namespace ditserve::worker
