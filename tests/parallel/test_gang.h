#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "parallel/process_groups.h"
#include "tests/harness/multiproc.h"

namespace ditserve::parallel {

// Inside a multiproc scenario: joins the rendezvous on the harness's port
// and builds this rank's process groups for `config`.
absl::StatusOr<std::unique_ptr<ProcessGroups>> JoinTestGang(const testing::RankContext& ctx,
                                                            const ParallelConfig& config,
                                                            const ProcessGroupsOptions& options);

}  // namespace ditserve::parallel
