#pragma once

// The frontend's control service (ditserve.control.v1.GangControl): rank 0
// of the gang attaches with one bidirectional stream. One gang at a time:
// a second Attach while one is current is refused with ALREADY_EXISTS.
// Events go to a GangEvents (the dispatcher); Send() queues messages on the
// current stream. Thread-safe.

#include <cstdint>
#include <deque>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "ditserve/v1/control.grpc.pb.h"
#include "server/gang_events.h"

namespace ditserve::server {

class GangLink final : public control::v1::GangControl::CallbackService, public GangChannel {
 public:
  // `events` must outlive the service's server.
  explicit GangLink(GangEvents* events) : events_(events) {}

  grpc::ServerBidiReactor<control::v1::WorkerMessage, control::v1::FrontendMessage>* Attach(
      grpc::CallbackServerContext* context) override;

  bool Send(uint64_t connection, const control::v1::FrontendMessage& message) override;

  // Forgets the current stream (its gang's processes are gone): events from
  // it are ignored from now on and a new gang may attach.
  void DropCurrent();

 private:
  class Stream;
  friend class Stream;
  // Called by a Stream.
  bool Claim(Stream* stream, uint64_t* connection);
  void Release(Stream* stream);

  GangEvents* events_;
  absl::Mutex mu_;
  Stream* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t next_connection_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace ditserve::server
