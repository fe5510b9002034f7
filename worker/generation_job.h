#pragma once

// The batch generation job of ditserve-run / ditserve-worker --model: every
// rank loads its share of the model, the gang generates every --prompt as
// one batch, and rank 0 writes the images (and, if asked, the final
// latents) to --output_dir.

#include <c10/core/Device.h>

#include "absl/status/status.h"
#include "parallel/process_groups.h"
#include "core/worker_options.h"

namespace ditserve::worker {

// Collective. Progress and the result lines go to stdout on rank 0.
absl::Status RunGenerationJob(const core::WorkerOptions& options, parallel::ProcessGroups& groups, c10::Device device);

}  // namespace ditserve::worker
