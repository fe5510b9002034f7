#pragma once

#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "parallel/process_groups.h"

namespace ditserve::worker {

// One checked operation on one group, as seen by one rank (or merged over
// the group's members: slowest time, ok only if ok everywhere).
struct SelfCheckRow {
  std::string group;    // "ulysses[0,1]"
  std::string op;       // "all_reduce(sum)"
  long long bytes = 0;  // payload bytes this rank sent
  double millis = 0;
  bool ok = false;
  std::string error;    // why not ok
};

// Runs every collective on every group of this rank (the data-plane groups
// of each dimension and the control group) with values whose result is
// known in closed form, on `device`, with `elements` per tensor, and checks
// the results. Errors of the communicators become rows with ok=false.
std::vector<SelfCheckRow> RunSelfCheck(parallel::ProcessGroups& groups, c10::Device device,
                                       int elements);

// Gathers every rank's rows on rank 0 through the control group's store and
// merges them per (group, op). Returns the merged rows on rank 0 and an
// empty vector elsewhere. Every rank must call it.
absl::StatusOr<std::vector<SelfCheckRow>> GatherSelfCheck(parallel::ProcessGroups& groups,
                                                          const std::vector<SelfCheckRow>& mine);

// The table: group, members, operation, bytes, time, ok.
std::string FormatSelfCheckTable(const std::vector<SelfCheckRow>& rows);

}  // namespace ditserve::worker
