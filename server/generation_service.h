#pragma once

// The public gRPC API (ditserve.v1.GenerationService) on the callback API.
// Each call is a small reactor that submits its request to the Dispatcher
// and relays progress and the terminal status; a client cancel or a passed
// deadline abandons the request in the dispatcher. Thread-safe.

#include <string>

#include <grpcpp/grpcpp.h>

#include "ditserve/v1/generation.grpc.pb.h"
#include "server/dispatcher.h"
#include "server/server_options.h"

namespace ditserve::server {

class GenerationService final : public v1::GenerationService::CallbackService {
 public:
  // `dispatcher` must outlive the server this service is registered with.
  GenerationService(Dispatcher* dispatcher, const ServerOptions& options)
      : dispatcher_(dispatcher), options_(options) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context,
                                    const v1::GetInfoRequest* request,
                                    v1::GetInfoResponse* response) override;

 private:
  Dispatcher* dispatcher_;
  const ServerOptions options_;
};

}  // namespace ditserve::server
