#pragma once

#include "absl/status/status.h"

// Returns the status of `expr` from the enclosing function if it is not OK.
// `expr` is an absl::Status expression.
#define DITSERVE_RETURN_IF_ERROR(expr)           \
  do {                                           \
    ::absl::Status ditserve_status_ = (expr);    \
    if (!ditserve_status_.ok()) return ditserve_status_; \
  } while (0)
