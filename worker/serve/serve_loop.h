#pragma once

// The serving loop of one rank of a ditserve-server gang.
//
// Rank 0 attaches to the frontend (ControlClient), takes one batch at a
// time, broadcasts it to the other ranks over the world control group and
// runs it with every rank: as a running set that later batches join
// between steps (GangEngine::RunSet, ServedSet) when the gang has no
// PipeFusion and the batch no step cache, else as a closed batch
// (GangEngine::Generate). It reports progress after each step and returns
// the images. Other ranks follow rank
// 0's broadcasts. While idle, rank 0 broadcasts a keep-alive every second
// so that the followers' collectives stay inside their timeout.

#include "absl/status/status.h"
#include "parallel/process_groups.h"
#include "worker/serve/gang_engine.h"
#include "core/worker_options.h"

namespace ditserve::worker::serve {

// Runs until the frontend goes away (OK: every rank returns) or the gang
// breaks (an error: a peer died or hung, or a batch failed in a way that
// leaves the gang's collectives out of step). `engine` and `groups` belong
// to the caller. A batch that fails validation or is cancelled is answered
// and the loop goes on.
absl::Status RunServeLoop(const core::WorkerOptions& options, const std::string& device_name,
                          const std::string& dtype_name, GangEngine& engine,
                          parallel::ProcessGroups& groups);

}  // namespace ditserve::worker::serve
