#pragma once

#include "absl/status/statusor.h"

namespace ditserve::util {

// Returns a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0
// and released). Another process may take it before the caller binds it;
// callers that can retry should.
absl::StatusOr<int> PickFreePort();

}  // namespace ditserve::util
