#pragma once

// Built only with CUDA (DITSERVE_HAVE_CUDA): a Communicator over CUDA
// tensors through NCCL's own API.

#include <memory>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"

namespace ditserve::parallel {

struct NcclCommunicatorOptions {
  // Names the group in errors and in the store; equal on every member.
  std::string name = "world";
  // CUDA device of this rank.
  int device_index = 0;
  // Bound on group creation and on every operation. NCCL runs with
  // non-blocking communicators; a call whose work has not completed by the
  // deadline aborts the communicator and returns DEADLINE_EXCEEDED.
  absl::Duration timeout = absl::Seconds(300);
  bool check_shapes = true;
};

// The unique id travels through `store` (rank 0 of the group creates it).
// Operations are issued on the current CUDA stream of the device and are
// waited for (with the timeout) before the call returns; Send/Recv return a
// handle whose Wait() does the waiting.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const c10::intrusive_ptr<c10d::Store>& store, int group_rank, int group_size,
    const NcclCommunicatorOptions& options);

}  // namespace ditserve::parallel
