#include "server/public_security.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace ditserve::server {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> PublicServerCredentials(const TlsFiles& f) {
  if (f.cert_file.empty() && f.key_file.empty()) {
    if (!f.client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
    }
    return grpc::InsecureServerCredentials();
  }
  if (f.cert_file.empty() || f.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert_file and --tls_key_file go together");
  }
  auto cert = ReadPem(f.cert_file, "--tls_cert_file");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem(f.key_file, "--tls_key_file");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!f.client_ca_file.empty()) {
    auto ca = ReadPem(f.client_ca_file, "--tls_client_ca_file");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::unique_ptr<BearerTokens>> BearerTokens::Load(const std::string& path) {
  std::unique_ptr<BearerTokens> tokens(new BearerTokens(path));
  absl::MutexLock lock(&tokens->mu_);
  if (absl::Status s = tokens->ReloadLocked(); !s.ok()) return s;
  return tokens;
}

absl::Status BearerTokens::Reload() {
  absl::MutexLock lock(&mu_);
  return ReloadLocked();
}

absl::Status BearerTokens::ReloadLocked() {
  struct stat st {};
  if (stat(path_.c_str(), &st) != 0) return absl::NotFoundError(absl::StrCat("--auth_tokens_file: cannot read ", path_));
  std::ifstream in(path_);
  if (!in) return absl::NotFoundError(absl::StrCat("--auth_tokens_file: cannot read ", path_));
  absl::flat_hash_map<std::string, std::string> names;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (stripped.empty() || stripped[0] == '#') continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(stripped, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const std::string token(fields[0]);
    if (token.size() < 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth_tokens_file ", path_, " line ", n, ": a token must have at least 16 bytes"));
    }
    const std::string name = fields.size() > 1 ? std::string(fields[1]) : absl::StrCat("caller-", n);
    if (!names.emplace(token, name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth_tokens_file ", path_, " line ", n, ": the token of an earlier line again"));
    }
  }
  if (names.empty()) return absl::InvalidArgumentError(absl::StrCat("--auth_tokens_file ", path_, " names no token"));
  names_ = std::move(names);
  mtime_ns_ = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  size_ = static_cast<int64_t>(st.st_size);
  return absl::OkStatus();
}

absl::StatusOr<std::string> BearerTokens::Authenticate(std::optional<std::string> authorization) {
  absl::MutexLock lock(&mu_);
  const int64_t now = absl::ToUnixNanos(absl::Now());
  if (now - last_check_ns_ >= 1000000000) {
    last_check_ns_ = now;
    struct stat st {};
    if (stat(path_.c_str(), &st) == 0 &&
        (static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec != mtime_ns_ ||
         static_cast<int64_t>(st.st_size) != size_)) {
      (void)ReloadLocked();  // a broken edit keeps the previous tokens
    }
  }
  constexpr absl::string_view kScheme = "Bearer ";
  if (!authorization.has_value() || !absl::StartsWith(*authorization, kScheme)) {
    return absl::UnauthenticatedError("this server needs an 'authorization: Bearer <token>' header");
  }
  auto it = names_.find(authorization->substr(kScheme.size()));
  if (it == names_.end()) return absl::UnauthenticatedError("the bearer token is not accepted");
  return it->second;
}

std::optional<std::string> AuthorizationOf(const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

}  // namespace ditserve::server
