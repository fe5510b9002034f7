#pragma once

// The public gRPC API (ditserve.v1.GenerationService) on the callback API.
// Each call is a small reactor that submits its request to the Dispatcher
// and relays progress and the terminal status; a client cancel or a passed
// deadline abandons the request in the dispatcher. Thread-safe.

#include <string>

#include <grpcpp/grpcpp.h>

#include "ditserve/v1/generation.grpc.pb.h"
#include "server/dispatcher.h"
#include "server/public_security.h"
#include "server/server_options.h"

namespace ditserve::server {

class GenerationService final : public v1::GenerationService::CallbackService {
 public:
  // `dispatcher` (and `tokens`, when set) must outlive the server this
  // service is registered with. With `tokens`, every call needs a bearer
  // token it accepts (UNAUTHENTICATED otherwise, before any work).
  GenerationService(Dispatcher* dispatcher, const ServerOptions& options, BearerTokens* tokens = nullptr)
      : dispatcher_(dispatcher), options_(options), tokens_(tokens) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetInfo(grpc::CallbackServerContext* context,
                                    const v1::GetInfoRequest* request,
                                    v1::GetInfoResponse* response) override;

 private:
  // OK (and the caller's name in `caller`, when tokens are required), or
  // UNAUTHENTICATED when tokens are required and the call has none they
  // accept.
  grpc::Status Authenticate(const grpc::CallbackServerContext& context, std::string* caller = nullptr) const;

  Dispatcher* dispatcher_;
  const ServerOptions options_;
  BearerTokens* tokens_;
};

}  // namespace ditserve::server
