// Bearer tokens (load, authenticate, reload on change and on request, a
// broken edit keeps the old set) and the TLS credential flags' errors.

#include "server/public_security.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ditserve::server {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/", name, "_", getpid());
  std::ofstream(path) << text;
  return path;
}

constexpr char kAlice[] = "alice-token-0123456789";
constexpr char kBob[] = "bob-token-abcdefghijkl";

TEST(BearerTokens, AcceptsListedTokensAndNamesTheCaller) {
  const std::string path =
      WriteFile("tokens", absl::StrCat("# callers\n\n", kAlice, " alice\n  ", kBob, "\n"));
  auto tokens = BearerTokens::Load(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*(*tokens)->Authenticate(absl::StrCat("Bearer ", kAlice)), "alice");
  EXPECT_EQ(*(*tokens)->Authenticate(absl::StrCat("Bearer ", kBob)), "caller-4");  // its line number
  const auto missing = (*tokens)->Authenticate(std::nullopt);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(missing.status().message(), "this server needs an 'authorization: Bearer <token>' header");
  EXPECT_EQ((*tokens)->Authenticate(std::string(kAlice)).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*tokens)->Authenticate(absl::StrCat("Basic ", kAlice)).status().code(),
            absl::StatusCode::kUnauthenticated);
  const auto wrong = (*tokens)->Authenticate(absl::StrCat("Bearer ", kAlice, "x"));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(std::string(wrong.status().message()).find(kAlice), std::string::npos) << "errors never carry a token";
  unlink(path.c_str());
}

TEST(BearerTokens, ReloadsOnChangeAndKeepsTheOldSetOnABrokenEdit) {
  const std::string path = WriteFile("tokens_reload", absl::StrCat(kAlice, " alice\n"));
  auto tokens = BearerTokens::Load(path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_TRUE((*tokens)->Authenticate(absl::StrCat("Bearer ", kAlice)).ok());
  // Alice revoked, Bob added: seen by Authenticate itself (the file changed;
  // checked at most once a second).
  std::ofstream(path) << kBob << " bob\n";
  absl::SleepFor(absl::Milliseconds(1100));
  EXPECT_EQ((*tokens)->Authenticate(absl::StrCat("Bearer ", kAlice)).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(*(*tokens)->Authenticate(absl::StrCat("Bearer ", kBob)), "bob");
  // A broken edit (a short token): Reload says why and Bob still works.
  std::ofstream(path) << "short\n";
  const absl::Status broken = (*tokens)->Reload();
  EXPECT_EQ(broken.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(broken.message()).find("line 1: a token must have at least 16 bytes"), std::string::npos);
  EXPECT_EQ(*(*tokens)->Authenticate(absl::StrCat("Bearer ", kBob)), "bob");
  // Reload picks up a good file at once.
  std::ofstream(path) << kAlice << "\n";
  EXPECT_TRUE((*tokens)->Reload().ok());
  EXPECT_EQ(*(*tokens)->Authenticate(absl::StrCat("Bearer ", kAlice)), "caller-1");
  unlink(path.c_str());
}

TEST(BearerTokens, FileErrorsNameTheFileAndLine) {
  EXPECT_EQ(BearerTokens::Load("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
  const std::string empty = WriteFile("tokens_empty", "# nothing\n\n");
  EXPECT_EQ(BearerTokens::Load(empty).status().message(), absl::StrCat("--auth_tokens_file ", empty, " names no token"));
  const std::string twice = WriteFile("tokens_twice", absl::StrCat(kAlice, " a\n", kAlice, " b\n"));
  EXPECT_EQ(BearerTokens::Load(twice).status().message(),
            absl::StrCat("--auth_tokens_file ", twice, " line 2: the token of an earlier line again"));
  unlink(empty.c_str());
  unlink(twice.c_str());
}

TEST(PublicServerCredentials, FlagCombinations) {
  EXPECT_TRUE(PublicServerCredentials({}).ok());
  EXPECT_EQ(PublicServerCredentials({"cert.pem", "", ""}).status().message(),
            "--tls_cert_file and --tls_key_file go together");
  EXPECT_EQ(PublicServerCredentials({"", "", "ca.pem"}).status().message(),
            "--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
  EXPECT_EQ(PublicServerCredentials({"/nonexistent/cert.pem", "/nonexistent/key.pem", ""}).status().message(),
            "--tls_cert_file: cannot read /nonexistent/cert.pem");
}

}  // namespace
}  // namespace ditserve::server
