#pragma once

// The wire enum of step caching (ditserve.v1.StepCache) and the engine's
// core::StepCacheMethod, both ways. Header-only: both proto libraries use it.

#include <optional>

#include "core/step_cache.h"
#include "ditserve/v1/generation.pb.h"

namespace ditserve::proto {

inline v1::StepCache ToProto(core::StepCacheMethod method) {
  switch (method) {
    case core::StepCacheMethod::kNone: return v1::STEP_CACHE_NONE;
    case core::StepCacheMethod::kFirstBlock: return v1::STEP_CACHE_FIRST_BLOCK;
    case core::StepCacheMethod::kTeaCache: return v1::STEP_CACHE_TEACACHE;
  }
  return v1::STEP_CACHE_UNSPECIFIED;
}

// nullopt for STEP_CACHE_UNSPECIFIED (the server's default: the caller
// resolves it) and for values this build does not know.
inline std::optional<core::StepCacheMethod> FromProto(v1::StepCache method) {
  switch (method) {
    case v1::STEP_CACHE_NONE: return core::StepCacheMethod::kNone;
    case v1::STEP_CACHE_FIRST_BLOCK: return core::StepCacheMethod::kFirstBlock;
    case v1::STEP_CACHE_TEACACHE: return core::StepCacheMethod::kTeaCache;
    default: return std::nullopt;
  }
}

}  // namespace ditserve::proto
