#pragma once

// Checks a public GenerateRequest against the server's limits and the
// model, and fills in defaults. Pure: no I/O, thread-safe.

#include <string>

#include "absl/status/statusor.h"
#include "ditserve/v1/generation.pb.h"
#include "parallel/parallel_config.h"
#include "server/request.h"
#include "server/server_options.h"

namespace ditserve::server {

// What validation needs to know about the loaded model and its gang.
struct ModelShape {
  int size_multiple = 16;  // height and width must be multiples
  int default_size = 1024;
  parallel::ParallelConfig parallel;  // the gang's degrees
  int num_pipeline_patch = 0;         // 0: the PipeFusion degree
  // The family's guidance rule (the gang's Hello).
  double default_guidance_scale = 3.5;
  bool guidance_scale_is_cfg = false;  // SD3: guidance_scale is the CFG scale
  std::string family = "flux";
  // The text budget (the gang's Hello): a request's max_sequence_length
  // when 0, and its largest value; a limit of 0 leaves the check to the
  // gang.
  int default_max_sequence_length = 0;
  int max_sequence_length_limit = 0;
};

// INVALID_ARGUMENT naming the field and its limit, e.g. "height must be a
// multiple of 16 in [16, 1024], got 100", or the parallel flag a request
// does not fit (token rows not divisible by patches × SP degree; CFG
// parallel without true CFG). An unset seed becomes `random_seed`.
absl::StatusOr<GenerationParams> ValidateRequest(const v1::GenerateRequest& request,
                                                 const Limits& limits, const ModelShape& model,
                                                 uint64_t random_seed);

}  // namespace ditserve::server
