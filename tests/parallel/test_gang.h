#pragma once

#include <memory>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/process_groups.h"
#include "tests/harness/multiproc.h"

namespace ditserve::parallel {

// INTERNAL(`what`) unless `ok`: a scenario's assertion.
absl::Status Check(bool ok, const std::string& what);

// Inside a multiproc scenario: joins the rendezvous on the harness's port
// (rank 0 hosts the store: keep it alive while any rank may use it).
absl::StatusOr<c10::intrusive_ptr<c10d::Store>> JoinTestStore(const testing::RankContext& ctx);

// Inside a multiproc scenario: joins the rendezvous on the harness's port
// and builds this rank's process groups for `config`.
absl::StatusOr<std::unique_ptr<ProcessGroups>> JoinTestGang(const testing::RankContext& ctx,
                                                            const ParallelConfig& config,
                                                            const ProcessGroupsOptions& options);

}  // namespace ditserve::parallel
