#pragma once

#include "core/worker_options.h"

namespace ditserve::core {

// The values of the worker flags (defined in worker_flags.cc) after
// absl::ParseCommandLine. Both ditserve-worker and ditserve-run link them,
// so the launcher accepts every worker flag and forwards it.
WorkerOptions WorkerOptionsFromFlags();

}  // namespace ditserve::core
