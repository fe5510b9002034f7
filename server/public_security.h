#pragma once

// Who may call the public API: TLS (or mTLS) on its port, and bearer
// tokens checked per call. The health service and reflection stay open
// (the kubelet's probe and grpcurl reach them without a token); the metrics
// endpoint is a separate HTTP port (deploy/ restricts it by NetworkPolicy).

#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace ditserve::server {

struct TlsFiles {
  std::string cert_file;       // --tls_cert_file: PEM certificate chain
  std::string key_file;        // --tls_key_file: PEM private key
  std::string client_ca_file;  // --tls_client_ca_file: PEM CAs; non-empty requires client certificates (mTLS)
};

// Insecure credentials when no file is named; SSL credentials from the
// PEM files otherwise. INVALID_ARGUMENT when only one of cert and key is
// given, or a client CA without them; NOT_FOUND naming an unreadable file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> PublicServerCredentials(const TlsFiles& files);

// The accepted bearer tokens, from a file of one token per line, optionally
// followed by whitespace and the caller's name (default "caller-N" for line
// N); blank lines and lines starting with '#' are skipped. The file is
// re-read when its modification time or size changes (checked at most once
// a second by Authenticate) or on Reload(). Thread-safe. Tokens never leave
// this class: errors and names do not contain them.
class BearerTokens {
 public:
  // NOT_FOUND naming the file when unreadable; INVALID_ARGUMENT naming the
  // line when a token is shorter than 16 bytes or repeated, or the file
  // names none.
  static absl::StatusOr<std::unique_ptr<BearerTokens>> Load(const std::string& path);

  // The caller's name for the value of an "authorization" metadata entry
  // ("Bearer <token>"); UNAUTHENTICATED without naming the token otherwise.
  absl::StatusOr<std::string> Authenticate(std::optional<std::string> authorization);

  // Re-reads the file now (SIGHUP). A file that no longer parses keeps the
  // previous tokens and returns the error.
  absl::Status Reload();

 private:
  explicit BearerTokens(std::string path) : path_(std::move(path)) {}
  absl::Status ReloadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> names_ ABSL_GUARDED_BY(mu_);  // token -> caller name
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t size_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t last_check_ns_ ABSL_GUARDED_BY(mu_) = 0;
};

// The "authorization" metadata of a call, if any.
std::optional<std::string> AuthorizationOf(const grpc::CallbackServerContext& context);

}  // namespace ditserve::server
