#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ditserve::parallel {

enum class ReduceOp { kSum, kMax };

// An asynchronous point-to-point transfer in flight. Wait() blocks until it
// completes, fails, or the communicator's timeout passes. Call Wait() exactly
// once; destroying an un-waited handle waits (and drops the result). Owned by
// the caller; keeps the tensors it moves alive.
class PendingTransfer {
 public:
  virtual ~PendingTransfer() = default;
  virtual absl::Status Wait() = 0;
};

// Collectives over one group of ranks (a dimension's group, or the world).
// Ranks passed in and out are ranks *within the group* (0 … size()-1).
//
// Contracts common to every implementation:
// - Every member calls the same collectives in the same order with tensors
//   of equal shape and dtype (AllGather, AllToAll and Broadcast check the
//   shapes first and return INVALID_ARGUMENT on a mismatch, on every rank).
// - Any dtype works; f16/bf16 reductions accumulate in f32. Inputs may be
//   non-contiguous; in-place results are written back into the given view.
// - A peer that dies or hangs makes the pending and later calls return an
//   error (UNAVAILABLE or DEADLINE_EXCEEDED) within the timeout the
//   communicator was built with; nothing waits forever. After an error the
//   communicator is unusable: call Abort() and rebuild the gang.
// - Not thread-safe: one thread issues the calls of one communicator.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // e.g. "ulysses[0,1]"; used in error messages.
  virtual const std::string& name() const = 0;
  // How the data moves: "gloo", "shm" or "nccl".
  virtual const char* backend() const = 0;

  // In place: every rank ends with the element-wise reduction.
  virtual absl::Status AllReduce(at::Tensor& tensor, ReduceOp op) = 0;
  // Concatenation of every rank's `input` along `dim`, in rank order.
  virtual absl::StatusOr<at::Tensor> AllGather(const at::Tensor& input, int64_t dim) = 0;
  // `input` is split into size() equal chunks along `scatter_dim`; chunk j
  // goes to rank j. The chunks received are concatenated along `gather_dim`
  // in rank order. size(scatter_dim) must divide by size().
  virtual absl::StatusOr<at::Tensor> AllToAll(const at::Tensor& input, int64_t scatter_dim,
                                              int64_t gather_dim) = 0;
  // In place: every rank ends with `root`'s tensor.
  virtual absl::Status Broadcast(at::Tensor& tensor, int root) = 0;
  // Asynchronous send of `tensor` to rank `dst`; matched by a Recv with the
  // same tag on `dst`. Do not modify `tensor` before Wait() returns.
  virtual absl::StatusOr<std::unique_ptr<PendingTransfer>> Send(const at::Tensor& tensor,
                                                                int dst, int tag) = 0;
  // Asynchronous receive into `tensor` (its shape and dtype fix the size).
  // `tensor` holds the data once Wait() returns OK.
  virtual absl::StatusOr<std::unique_ptr<PendingTransfer>> Recv(at::Tensor& tensor, int src,
                                                                int tag) = 0;
  virtual absl::Status Barrier() = 0;
  // Stops using the communicator: later calls fail with FAILED_PRECONDITION.
  // Idempotent; safe after an error.
  virtual void Abort() = 0;
};

}  // namespace ditserve::parallel
