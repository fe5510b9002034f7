#pragma once

#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ditserve::parallel {

struct RendezvousOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0;
  int world_size = 1;
  // How long to wait for the master (ranks > 0) or for every rank to join
  // (rank 0), and the default timeout of store operations.
  absl::Duration timeout = absl::Seconds(300);
};

// Joins the gang's c10d TCPStore: rank 0 hosts it on master_port and waits
// for the other world_size-1 ranks; the others connect to
// master_addr:master_port. Works on one machine or across machines.
// Errors: INVALID_ARGUMENT for bad options; DEADLINE_EXCEEDED or UNAVAILABLE
// naming the address, the rank and the timeout when the gang does not form;
// ALREADY_EXISTS when rank 0 cannot listen on master_port because another
// socket holds it.
absl::StatusOr<c10::intrusive_ptr<c10d::Store>> JoinRendezvous(const RendezvousOptions& options);

}  // namespace ditserve::parallel
