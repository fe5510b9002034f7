#pragma once

// The two directions of the control channel, as interfaces, so that the
// dispatcher and the control service (gang_link.h) do not depend on each
// other's classes.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "ditserve/v1/control.pb.h"

namespace ditserve::server {

// Events from the gang, called by the control service on gRPC threads.
// `connection` identifies one Attach stream; events of a stream that is no
// longer the current one are ignored.
class GangEvents {
 public:
  virtual ~GangEvents() = default;
  virtual void OnAttach(uint64_t connection, const control::v1::Hello& hello) = 0;
  virtual void OnProgress(uint64_t connection, const control::v1::Progress& progress) = 0;
  virtual void OnBatchDone(uint64_t connection, control::v1::BatchDone done) = 0;
  // A request left the gang's running set (its images, or why not).
  virtual void OnLeft(uint64_t connection, control::v1::Left left) = 0;
  // The stream ended or the gang's processes died: every batch in flight
  // fails. connection 0: whichever gang is current.
  virtual void OnDetach(uint64_t connection, const absl::Status& why) = 0;
};

// Messages to the gang.
class GangChannel {
 public:
  virtual ~GangChannel() = default;
  // Queues `message` on the stream `connection`; false when that stream is
  // gone. Never blocks on the network.
  virtual bool Send(uint64_t connection, const control::v1::FrontendMessage& message) = 0;
};

}  // namespace ditserve::server
