#pragma once

// Checks a public GenerateRequest against the server's limits and the
// model, and fills in defaults. Pure: no I/O, thread-safe.

#include "absl/status/statusor.h"
#include "ditserve/v1/generation.pb.h"
#include "server/request.h"
#include "server/server_options.h"

namespace ditserve::server {

// What validation needs to know about the loaded model.
struct ModelShape {
  int size_multiple = 16;  // height and width must be multiples
  int default_size = 1024;
};

// INVALID_ARGUMENT naming the field and its limit, e.g. "height must be a
// multiple of 16 in [16, 1024], got 100". An unset seed becomes `random_seed`.
absl::StatusOr<GenerationParams> ValidateRequest(const v1::GenerateRequest& request,
                                                 const Limits& limits, const ModelShape& model,
                                                 uint64_t random_seed);

}  // namespace ditserve::server
