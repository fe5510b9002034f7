#pragma once

#include <memory>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace ditserve::parallel {

struct GlooCommunicatorOptions {
  // Names the group in errors and in the store ("ulysses[0,1]"). Every
  // member must pass the same name; distinct groups need distinct names.
  std::string name = "world";
  // Bound on every operation, group creation included.
  absl::Duration timeout = absl::Seconds(300);
  // Address this rank's Gloo device listens on. `interface` (e.g. "eth0")
  // wins over `hostname`; with neither, 127.0.0.1 is used when
  // `loopback_only`, else the machine's hostname.
  std::string interface;
  std::string hostname;
  bool loopback_only = true;
  // Exchange shapes before AllReduce/AllGather/AllToAll/Broadcast so a
  // mismatch is an INVALID_ARGUMENT on every rank instead of garbage.
  bool check_shapes = true;
};

// A Communicator over CPU tensors through c10d's ProcessGroupGloo.
// Blocks until every member of the group (`group_size` processes calling
// this with the same options.name) has joined through `store`, or the
// timeout passes (DEADLINE_EXCEEDED/UNAVAILABLE).
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const c10::intrusive_ptr<c10d::Store>& store, int group_rank, int group_size,
    const GlooCommunicatorOptions& options);

}  // namespace ditserve::parallel
