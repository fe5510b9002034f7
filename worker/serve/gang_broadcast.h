#pragma once

// Rank 0 hands each unit of work to the rest of its gang over the world
// control group (Gloo): a header tensor [command, payload length] and then,
// when the length is non-zero, the payload bytes as a uint8 tensor.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace ditserve::worker::serve {

enum class GangCommand : int64_t {
  kKeepAlive = 0,  // no work; keeps idle ranks' collectives inside their timeout
  kRun = 1,        // payload: a serialised ditserve.control.v1.RunBatch
  kStop = 2,       // the frontend is gone: every rank exits
};

struct GangMessage {
  GangCommand command = GangCommand::kKeepAlive;
  std::string payload;
};

// Collective on `control`: every member calls it; `message` is read on rank
// 0 of the group and ignored elsewhere. Returns rank 0's message on every
// rank. Errors (a peer died or hung) are the communicator's: the gang is
// broken and must be rebuilt.
absl::StatusOr<GangMessage> BroadcastGangMessage(parallel::Communicator& control,
                                                 const GangMessage& message);

}  // namespace ditserve::worker::serve
