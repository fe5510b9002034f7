#pragma once

// Where the dispatcher delivers one accepted request's progress and its
// terminal status. Implemented by the gRPC handlers (generation_service.cc).

#include "ditserve/v1/generation.pb.h"
#include "grpcpp/support/status.h"

namespace ditserve::server {

// Contract: Progress may be called any number of times, then Finish exactly
// once; calls after Finish are ignored. Both may be called from any thread,
// concurrently; implementations serialise them and never block on the
// network.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void Progress(const v1::Progress& progress) = 0;
  virtual void Finish(const grpc::Status& status, v1::GenerateResponse response) = 0;
};

}  // namespace ditserve::server
