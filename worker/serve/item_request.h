#pragma once

// The control protocol's Item (what the frontend's ToControlItem sends) as
// the engine's GenerationRequest: the one conversion on the worker side.

#include <vector>

#include "absl/status/statusor.h"
#include "ditserve/v1/control.pb.h"
#include "worker/pipelines/generation_request.h"

namespace ditserve::worker::serve {

// Every field of `item`. INVALID_ARGUMENT for a step cache the frontend
// left unresolved (STEP_CACHE_UNSPECIFIED) or that this build does not know.
absl::StatusOr<pipelines::GenerationRequest> RequestFromItem(const control::v1::Item& item);

// RequestFromItem of every item of `batch`, in order; the first error.
absl::StatusOr<std::vector<pipelines::GenerationRequest>> RequestsFromBatch(const control::v1::RunBatch& batch);

}  // namespace ditserve::worker::serve
