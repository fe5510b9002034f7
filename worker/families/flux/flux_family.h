#pragma once

// The Flux family's opener: reads flux's configs from a diffusers directory
// whose model_index.json names FluxPipeline (OpenModelFamily dispatches here).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/generation_plan.h"
#include "worker/families/model_family.h"

namespace ditserve::worker::families {

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenFluxFamily(const std::string& dir, const core::ModelGeometry& geometry);

}  // namespace ditserve::worker::families
