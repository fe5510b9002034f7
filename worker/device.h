#pragma once

#include <string>

#include <c10/core/Device.h>

#include "absl/status/statusor.h"

namespace ditserve::worker {

// Maps --device (cpu | cuda | auto) and the local rank to a device: cuda
// uses GPU local_rank % device count; auto picks cuda when this is a CUDA
// build and a GPU is present, else cpu. INVALID_ARGUMENT for an unknown
// name, FAILED_PRECONDITION for cuda without a GPU.
absl::StatusOr<c10::Device> ResolveDevice(const std::string& name, int local_rank);

}  // namespace ditserve::worker
