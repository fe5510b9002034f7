#pragma once

// Checks of every Communicator operation against values computed
// independently from the members' global ranks; shared by the Gloo (CPU)
// and NCCL (CUDA) communicator tests.

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "parallel/communicator.h"

namespace ditserve::parallel {

// Runs all_reduce (sum, max), all_gather (three dims), all_to_all (two
// layouts), broadcast, send/recv around the ring and barrier on `comm`,
// whose members (global ranks, by group rank) are `members` and of which
// this process is global rank `me`, with tensors of `dtype` on `device`.
absl::Status CheckGroupCollectives(Communicator& comm, const std::vector<int>& members, int me,
                                   at::ScalarType dtype, c10::Device device);

}  // namespace ditserve::parallel
