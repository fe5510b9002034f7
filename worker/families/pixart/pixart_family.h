#pragma once

// The PixArt family's opener: PixArt-α and PixArt-Σ directories
// (model_index.json's PixArtAlphaPipeline or PixArtSigmaPipeline;
// OpenModelFamily dispatches here).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/generation_plan.h"
#include "worker/families/model_family.h"

namespace ditserve::worker::families {

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenPixArtFamily(const std::string& dir,
                                                              const core::ModelGeometry& geometry);

}  // namespace ditserve::worker::families
