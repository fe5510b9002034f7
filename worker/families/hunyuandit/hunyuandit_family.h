#pragma once

// The HunyuanDiT family's opener: model_index.json's HunyuanDiTPipeline
// (OpenModelFamily dispatches here).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/generation_plan.h"
#include "worker/families/model_family.h"

namespace ditserve::worker::families {

absl::StatusOr<std::unique_ptr<ModelFamily>> OpenHunyuanDiTFamily(const std::string& dir,
                                                                  const core::ModelGeometry& geometry);

}  // namespace ditserve::worker::families
