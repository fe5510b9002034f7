#pragma once

#include <map>
#include <set>
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
struct LoadOptions {
  std::string prefix;
  // Tied weights: module key -> checkpoint key that may stand in for it
  // when the module key itself is absent (T5's shared embedding saved as
  // encoder.embed_tokens.weight). Either key counts as consumed.
  std::map<std::string, std::string> tied;
  // Checkpoint keys that may be present and are not needed (e.g. old
  // CLIP checkpoints' position_ids buffer).
  std::set<std::string> ignorable;
  // Loading part of a model (a PipeFusion stage): checkpoint keys the
  // module does not have are skipped instead of reported. Missing keys are
  // still errors.
  bool partial = false;
};
absl::Status LoadModuleWeights(torch::nn::Module& module, const SafetensorsCheckpoint& checkpoint,
                               const LoadOptions& options);
inline absl::Status LoadModuleWeights(torch::nn::Module& module, const SafetensorsCheckpoint& checkpoint,
                                      const std::string& prefix = "") {
  LoadOptions options;
  options.prefix = prefix;
  return LoadModuleWeights(module, checkpoint, options);
}

}  // namespace ditserve::worker::weights
