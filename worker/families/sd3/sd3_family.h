#pragma once

// The Sd3 family's opener: reads sd3's configs from a diffusers directory
// whose model_index.json names StableDiffusion3Pipeline (OpenModelFamily dispatches here).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/generation_plan.h"
#include "worker/families/model_family.h"

namespace ditserve::worker::families {

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenSd3Family(const std::string& dir, const core::ModelGeometry& geometry);

}  // namespace ditserve::worker::families
