#pragma once

#include <string>

#include <grpcpp/support/status.h>

namespace ditserve::proto {

// The canonical name ("OK", "INVALID_ARGUMENT", ...) of a gRPC status code;
// shared by the server's metrics and the client.
// "OK", "INVALID_ARGUMENT", ... for a gRPC status code.
std::string CodeName(grpc::StatusCode code);

}  // namespace ditserve::proto
