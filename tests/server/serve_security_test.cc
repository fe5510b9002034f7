// ditserve-server with TLS, mTLS and bearer tokens, end to end with
// certificates made here by openssl: a plain client cannot talk to a TLS
// port; under mTLS a client without a certificate (or with one from another
// CA) fails and a good one generates; without a token, or with a wrong or
// revoked one, GenerationService calls get UNAUTHENTICATED (naming no
// token) while health stays open; ditserve-client speaks all of it; GetInfo
// names the model, not its path.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ditserve/v1/generation.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/harness/binaries.h"
#include "tests/server/server_process.h"

namespace ditserve {
namespace {

using testing::ServerProcess;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A CA, a server certificate for 127.0.0.1 signed by it, a client
// certificate signed by it, and a client certificate of another CA.
class Certificates {
 public:
  Certificates() : dir_(absl::StrCat(::testing::TempDir(), "/certs_", getpid())) {
    std::filesystem::create_directories(dir_);
    const std::string script = absl::StrCat(
        "set -e; cd ", dir_, "; exec >openssl.log 2>&1\n",
        "for ca in ca other_ca; do openssl req -x509 -newkey rsa:2048 -nodes -keyout $ca.key -out $ca.pem "
        "-days 2 -subj /CN=ditserve-test-$ca; done\n",
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > san.ext\n",
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost\n",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
        "-extfile san.ext\n",
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client\n",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2\n",
        "openssl req -newkey rsa:2048 -nodes -keyout stranger.key -out stranger.csr -subj /CN=stranger\n",
        "openssl x509 -req -in stranger.csr -CA other_ca.pem -CAkey other_ca.key -CAcreateserial "
        "-out stranger.pem -days 2\n");
    ok_ = std::system(("bash -c '" + script + "'").c_str()) == 0;
  }
  ~Certificates() { std::filesystem::remove_all(dir_); }
  bool ok() const { return ok_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string log() const { return Read(path("openssl.log")); }

  // TLS channel credentials trusting the CA, with `client` ("client",
  // "stranger") as the client certificate, or none when empty.
  std::shared_ptr<grpc::ChannelCredentials> Channel(const std::string& client) const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Read(path("ca.pem"));
    if (!client.empty()) {
      o.pem_cert_chain = Read(path(client + ".pem"));
      o.pem_private_key = Read(path(client + ".key"));
    }
    return grpc::SslCredentials(o);
  }

 private:
  std::string dir_;
  bool ok_ = false;
};

grpc::Status GetInfo(const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
                     v1::GetInfoResponse* info) {
  auto stub = v1::GenerationService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  return stub->GetInfo(&context, v1::GetInfoRequest(), info);
}

std::shared_ptr<grpc::Channel> ChannelTo(const std::string& address,
                                         std::shared_ptr<grpc::ChannelCredentials> credentials) {
  return grpc::CreateChannel(address, std::move(credentials));
}

constexpr char kToken[] = "ops-team-token-7f3a9c2e51";
constexpr char kOther[] = "batch-jobs-token-0d8b44e1c6";

TEST(ServeSecurity, MutualTlsAndBearerTokens) {
  Certificates certs;
  ASSERT_TRUE(certs.ok()) << certs.log();
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string tokens = certs.path("tokens");
  std::ofstream(tokens) << "# who may call\n" << kToken << " ops\n";
  auto server = ServerProcess::Start(
      {"--model=" + *model, "--spawn_workers", "--device=cpu", "--threads=1",
       "--tls_cert_file=" + certs.path("server.pem"), "--tls_key_file=" + certs.path("server.key"),
       "--tls_client_ca_file=" + certs.path("ca.pem"), "--auth_tokens_file=" + tokens},
      certs.Channel("client"));
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& s = **server;
  // Health is reachable without a token (the kubelet's probe), over mTLS.
  ASSERT_TRUE(s.WaitHealth("SERVING", absl::Seconds(300)).ok()) << s.Log();

  v1::GetInfoResponse info;
  // A plain-text client cannot talk to the TLS port.
  EXPECT_EQ(GetInfo(ChannelTo(s.address(), grpc::InsecureChannelCredentials()), kToken, &info).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // mTLS: no client certificate, or one from another CA, is refused.
  EXPECT_EQ(GetInfo(ChannelTo(s.address(), certs.Channel("")), kToken, &info).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(GetInfo(ChannelTo(s.address(), certs.Channel("stranger")), kToken, &info).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // The right certificate: the token decides.
  const std::shared_ptr<grpc::Channel> good = s.channel();
  grpc::Status st = GetInfo(good, "", &info);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(st.error_message(), "this server needs an 'authorization: Bearer <token>' header");
  st = GetInfo(good, kOther, &info);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(st.error_message().find(kOther), std::string::npos);
  ASSERT_TRUE(GetInfo(good, kToken, &info).ok());
  EXPECT_EQ(info.model(), std::filesystem::path(*model).filename().string()) << "the name, not the path";

  // A generation over mTLS with the token, through ditserve-client.
  std::ofstream(certs.path("token")) << kToken << "\n";
  const std::string png = certs.path("out.png");
  const std::string client_flags = absl::StrCat(
      testing::BinDir(), "/ditserve-client --server=", s.address(), " --tls_ca_file=", certs.path("ca.pem"),
      " --tls_cert_file=", certs.path("client.pem"), " --tls_key_file=", certs.path("client.key"),
      " --auth_token_file=", certs.path("token"));
  ASSERT_EQ(std::system((client_flags + " generate --prompt='a red circle' --height=64 --width=64 "
                                        "--num_inference_steps=2 --quiet --output=" + png + " > " +
                         certs.path("client.log") + " 2>&1").c_str()),
            0)
      << Read(certs.path("client.log"));
  EXPECT_EQ(Read(png).substr(1, 3), "PNG");
  // Without the token file the client gets UNAUTHENTICATED and exits 1.
  const std::string no_token = absl::StrCat(
      testing::BinDir(), "/ditserve-client --server=", s.address(), " --tls_ca_file=", certs.path("ca.pem"),
      " --tls_cert_file=", certs.path("client.pem"), " --tls_key_file=", certs.path("client.key"));
  EXPECT_NE(std::system((no_token + " info > " + certs.path("info.log") + " 2>&1").c_str()), 0);
  EXPECT_NE(Read(certs.path("info.log")).find("UNAUTHENTICATED"), std::string::npos) << Read(certs.path("info.log"));

  // Revoke ops and admit the batch jobs' token; SIGHUP reloads at once.
  std::ofstream(tokens) << kOther << " batch\n";
  s.Signal(SIGHUP);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (GetInfo(good, kOther, &info).error_code() != grpc::StatusCode::OK && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(GetInfo(good, kOther, &info).ok());
  EXPECT_EQ(GetInfo(good, kToken, &info).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(s.Log().find(kToken), std::string::npos) << "tokens never appear in the log";
  EXPECT_EQ(s.Log().find(kOther), std::string::npos) << "tokens never appear in the log";
}

// --info_model_path brings the path back for operators who want it.
TEST(ServeSecurity, InfoModelPathFlag) {
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  auto server = ServerProcess::Start({"--model=" + *model, "--info_model_path"});  // no gang needed
  ASSERT_TRUE(server.ok()) << server.status();
  v1::GetInfoResponse info;
  ASSERT_TRUE(GetInfo((*server)->channel(), "", &info).ok());
  EXPECT_EQ(info.model(), *model);
}

// --enable_reflection=false: reflection is not served (UNIMPLEMENTED).
TEST(ServeSecurity, ReflectionCanBeTurnedOff) {
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  auto server = ServerProcess::Start({"--model=" + *model, "--enable_reflection=false"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub((*server)->channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  auto stream = stub->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  stream->Write(request);
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  while (stream->Read(&response)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST(ServeSecurity, BadSecurityFlagsFailWithTheFlagsName) {
  auto model = testing::TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  auto half = ServerProcess::Start({"--model=" + *model, "--tls_cert_file=/nonexistent.pem"});
  ASSERT_FALSE(half.ok());
  EXPECT_NE(std::string(half.status().message()).find("--tls_cert_file and --tls_key_file go together"),
            std::string::npos)
      << half.status();
  auto unnamed = ServerProcess::Start({"--model=" + *model, "--max_queued_per_caller=2"});
  ASSERT_FALSE(unnamed.ok());
  EXPECT_NE(std::string(unnamed.status().message())
                .find("--max_requests_per_caller and --max_queued_per_caller limit named callers: they need "
                      "--auth_tokens_file"),
            std::string::npos)
      << unnamed.status();
  auto missing = ServerProcess::Start({"--model=" + *model, "--auth_tokens_file=/nonexistent/tokens"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("--auth_tokens_file: cannot read /nonexistent/tokens"),
            std::string::npos)
      << missing.status();
}

}  // namespace
}  // namespace ditserve
