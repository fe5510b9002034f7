#pragma once

#include "absl/status/statusor.h"
#include "server/server_options.h"

namespace ditserve::server {

// The values of ditserve-server's flags (server_flags.cc) and of every
// worker flag (core/worker_flags.cc) after absl::ParseCommandLine.
// INVALID_ARGUMENT naming the flag and its limit when one is out of range.
absl::StatusOr<ServerOptions> ServerOptionsFromFlags();

}  // namespace ditserve::server
