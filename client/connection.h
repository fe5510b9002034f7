#pragma once

// The client's channel to ditserve-server: plain or TLS (with a client
// certificate for mTLS), and a bearer token added to every call's metadata
// ("authorization: Bearer …", by an interceptor, so it works with TLS
// terminated in front of the server too).

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace ditserve::client {

struct ConnectionOptions {
  std::string server;         // host:port
  std::string tls_ca_file;    // PEM CAs to verify the server with; non-empty: TLS
  std::string tls_cert_file;  // PEM client certificate (mTLS), with tls_key_file
  std::string tls_key_file;
  std::string auth_token_file;  // the token's first line (trimmed); empty: no token
};

// INVALID_ARGUMENT naming the flag for a client certificate without a key
// (or without --tls_ca_file) or an empty token file; NOT_FOUND naming an
// unreadable file.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const ConnectionOptions& options);

}  // namespace ditserve::client
