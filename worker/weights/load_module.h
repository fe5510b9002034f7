#pragma once

#include <string>

#include "absl/status/status.h"
#include "worker/weights/safetensors.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::weights {

// Fills every parameter and buffer of `module` from the checkpoint tensor
// of the same name (`prefix` + the module's dotted name, which equals the
// diffusers key), converting to the parameter's dtype and device.
// Every checkpoint key under `prefix` must be consumed and every parameter
// found: otherwise INVALID_ARGUMENT listing the missing and the unexpected
// keys (the first 20 of each, and how many). A shape mismatch is
// INVALID_ARGUMENT naming the key and both shapes.
absl::Status LoadModuleWeights(torch::nn::Module& module, const SafetensorsCheckpoint& checkpoint,
                               const std::string& prefix = "");

}  // namespace ditserve::worker::weights
