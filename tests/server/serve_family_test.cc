// ditserve-server on a directory of each non-Flux family (Stable Diffusion
// 3.5, PixArt-Σ, HunyuanDiT) with a CFG-parallel gang of 2: GetInfo reports
// the family and its guidance, Generate and GenerateStream return the
// serial image (ditserve-run, one rank), and the family's own limits are
// INVALID_ARGUMENT naming the field. No family-specific code in the server,
// the client or the gang: the directory decides.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "ditserve/v1/generation.grpc.pb.h"
#include "tests/harness/binaries.h"
#include "tests/server/image_decode.h"
#include "tests/server/server_process.h"

namespace ditserve {
namespace {

using testing::ServerProcess;

constexpr int kSteps = 3;
constexpr const char* kPrompt = "a red circle on a blue background";

struct Family {
  std::string name;                     // the test's name
  std::vector<std::string> make_flags;  // ditserve-make-model's, besides --preset and --out
  std::string model_family;             // GetInfo.model_family
  double default_guidance_scale;
  std::string config_key;  // a key only this family's transformer config has
  int default_max_sequence_length, max_sequence_length_limit;  // the tiny preset's
};

// One server per family for the whole suite, started at its first test.
struct FamilyServer {
  std::string root, model;
  std::unique_ptr<ServerProcess> server;
};

class ServeFamily : public ::testing::TestWithParam<Family> {
 protected:
  static void TearDownTestSuite() {
    for (auto& [name, s] : *servers_) {
      s.server.reset();
      std::filesystem::remove_all(s.root);
    }
    servers_->clear();
  }
  void SetUp() override {
    const Family& f = GetParam();
    FamilyServer& s = (*servers_)[f.name];
    if (!s.server) {
      s.root = absl::StrCat(::testing::TempDir(), "/serve_", f.name, "_", getpid());
      std::filesystem::create_directories(s.root);
      s.model = s.root + "/model";
      std::vector<std::string> make = {testing::BinDir() + "/ditserve-make-model", "--preset=tiny", "--out=" + s.model};
      make.insert(make.end(), f.make_flags.begin(), f.make_flags.end());
      const testing::RunResult made = testing::RunOne(make);
      ASSERT_TRUE(made.exit.ok()) << made.output;
      auto server = ServerProcess::Start({"--model=" + s.model, "--spawn_workers", "--device=cpu", "--threads=1",
                                          "--use_cfg_parallel", "--max_prompt_bytes=64",
                                          absl::StrCat("--default_steps=", kSteps)});
      ASSERT_TRUE(server.ok()) << server.status();
      s.server = *std::move(server);
      ASSERT_TRUE(s.server->WaitHealth("SERVING", absl::Seconds(300)).ok()) << s.server->Log();
    }
    server_ = &s;
    stub_ = v1::GenerationService::NewStub(s.server->channel());
  }

  // The serial run's image for the same request (one rank, the same
  // defaults: the family's CFG against the empty prompt, its
  // max_sequence_length).
  testing::DecodedImage Serial(int height, int width, uint64_t seed, int max_sequence_length = 0) const {
    const std::string out =
        absl::StrCat(server_->root, "/serial_", height, "x", width, "_", seed, "_", max_sequence_length);
    const testing::RunResult r = testing::RunOne(
        {testing::BinDir() + "/ditserve-run", "--nproc=1", "--model=" + server_->model,
         std::string("--prompt=") + kPrompt, absl::StrCat("--height=", height), absl::StrCat("--width=", width),
         absl::StrCat("--num_inference_steps=", kSteps), absl::StrCat("--seed=", seed),
         absl::StrCat("--max_sequence_length=", max_sequence_length), "--threads=1", "--device=cpu",
         "--output_dir=" + out});
    EXPECT_TRUE(r.exit.ok()) << r.output;
    std::ifstream in(out + "/image-000.png", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto decoded = testing::DecodePng(bytes);
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    return decoded.ok() ? *decoded : testing::DecodedImage{};
  }

  // CFG parallel against one rank: equal up to float rounding through the
  // VAE (at most one uint8 level, see parallel_generation_test).
  void ExpectSerial(const std::string& png, int height, int width, uint64_t seed,
                    int max_sequence_length = 0) const {
    auto got = testing::DecodePng(png);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->width, width);
    EXPECT_EQ(got->height, height);
    const testing::DecodedImage want = Serial(height, width, seed, max_sequence_length);
    ASSERT_EQ(got->rgb.size(), want.rgb.size());
    int worst = 0;
    for (size_t i = 0; i < want.rgb.size(); ++i) worst = std::max(worst, std::abs(got->rgb[i] - want.rgb[i]));
    EXPECT_LE(worst, 1);
  }

  static v1::GenerateRequest Request(int height, int width, uint64_t seed) {
    v1::GenerateRequest r;
    r.set_prompt(kPrompt);
    r.set_height(height);
    r.set_width(width);
    r.set_seed(seed);
    return r;
  }

  static std::map<std::string, FamilyServer>* servers_;
  FamilyServer* server_ = nullptr;
  std::unique_ptr<v1::GenerationService::Stub> stub_;
};
std::map<std::string, FamilyServer>* ServeFamily::servers_ = new std::map<std::string, FamilyServer>();

TEST_P(ServeFamily, GetInfoReportsTheFamilyAndItsGuidance) {
  const Family& f = GetParam();
  grpc::ClientContext context;
  v1::GetInfoResponse info;
  ASSERT_TRUE(stub_->GetInfo(&context, v1::GetInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_family(), f.model_family);
  EXPECT_EQ(info.default_guidance_scale(), f.default_guidance_scale);
  EXPECT_EQ(info.cfg_scale_field(), "guidance_scale");
  EXPECT_FALSE(info.uses_guidance_embedding());
  EXPECT_EQ(info.default_size(), 64);  // the tiny presets' sample_size 8 x VAE scale 8
  EXPECT_EQ(info.limits().size_multiple(), 16);
  EXPECT_EQ(info.parallel().world_size(), 2);
  EXPECT_TRUE(info.parallel().use_cfg_parallel());
  EXPECT_NE(info.transformer_config_json().find("\"" + f.config_key + "\""), std::string::npos);
  EXPECT_EQ(info.default_max_sequence_length(), f.default_max_sequence_length);
  EXPECT_EQ(info.max_sequence_length_limit(), f.max_sequence_length_limit);
}

// A request's text budget reaches the gang: the image is ditserve-run's
// with the same --max_sequence_length; above the limit it is
// INVALID_ARGUMENT naming the field and the limit.
TEST_P(ServeFamily, MaxSequenceLengthReachesTheGang) {
  const Family& f = GetParam();
  v1::GenerateRequest r = Request(64, 48, 13);
  r.set_max_sequence_length(6);
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = stub_->Generate(&context, r, &response);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << server_->server->Log();
  ASSERT_EQ(response.images_size(), 1);
  ExpectSerial(response.images(0).data(), 64, 48, 13, 6);
  r.set_max_sequence_length(f.max_sequence_length_limit + 1);
  grpc::ClientContext bad_context;
  const grpc::Status bad = stub_->Generate(&bad_context, r, &response);
  EXPECT_EQ(bad.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find(absl::StrCat("max_sequence_length must be in [1, ", f.max_sequence_length_limit,
                                                  "] (0: the model's ", f.default_max_sequence_length, ")")),
            std::string::npos)
      << bad.error_message();
}

TEST_P(ServeFamily, GenerateReturnsTheSerialImage) {
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = stub_->Generate(&context, Request(80, 48, 11), &response);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << server_->server->Log();
  ASSERT_EQ(response.images_size(), 1);
  EXPECT_EQ(response.images(0).seed(), 11u);
  ExpectSerial(response.images(0).data(), 80, 48, 11);
}

TEST_P(ServeFamily, GenerateStreamSendsEveryStepThenTheSerialImage) {
  grpc::ClientContext context;
  auto reader = stub_->GenerateStream(&context, Request(48, 64, 12));
  v1::GenerateStreamResponse m;
  std::vector<int> steps;
  std::string png;
  while (reader->Read(&m)) {
    ASSERT_TRUE(png.empty()) << "nothing may follow the result";
    if (m.has_progress()) {
      EXPECT_EQ(m.progress().total(), kSteps);
      steps.push_back(m.progress().step());
    } else {
      ASSERT_TRUE(m.has_result());
      ASSERT_EQ(m.result().images_size(), 1);
      png = m.result().images(0).data();
    }
  }
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(steps, (std::vector<int>{1, 2, 3}));
  ExpectSerial(png, 48, 64, 12);
}

TEST_P(ServeFamily, FamilyLimitsAreInvalidArgumentNamingTheField) {
  const Family& f = GetParam();
  struct Case {
    std::string message;
    std::function<void(v1::GenerateRequest&)> edit;
  };
  const std::vector<Case> cases = {
      {"height must be a multiple of 16", [](auto& r) { r.set_height(72); }},
      {"prompt must be at most 64", [](auto& r) { r.set_prompt(std::string(65, 'x')); }},
      {absl::StrCat("true_cfg_scale must be unset or 1 for this model (", f.model_family, ")"),
       [](auto& r) { r.set_true_cfg_scale(2); }},
      // CFG parallel needs CFG: guidance_scale 1 turns it off.
      {"--use_cfg_parallel needs classifier-free guidance: guidance_scale > 1",
       [](auto& r) { r.set_guidance_scale(1); }},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = Request(64, 64, 1);
    c.edit(r);
    grpc::ClientContext context;
    v1::GenerateResponse response;
    const grpc::Status status = stub_->Generate(&context, r, &response);
    EXPECT_EQ(status.error_code(), grpc::INVALID_ARGUMENT) << c.message;
    EXPECT_NE(status.error_message().find(c.message), std::string::npos) << status.error_message();
  }
  grpc::ClientContext context;
  v1::GenerateResponse response;
  ASSERT_TRUE(stub_->Generate(&context, Request(64, 64, 2), &response).ok()) << "the server stays up";
}

INSTANTIATE_TEST_SUITE_P(
    Families, ServeFamily,
    ::testing::Values(
        Family{"sd3", {"--family=sd3", "--variant=sd3.5-medium"}, "sd3", 7.0, "dual_attention_layers", 256, 512},
        Family{"pixart", {"--family=pixart-sigma"}, "pixart", 4.5, "caption_channels", 300, 300},
        Family{"hunyuandit", {"--family=hunyuandit"}, "hunyuandit", 5.0, "text_len_t5", 256, 256}),
    [](const ::testing::TestParamInfo<Family>& info) { return info.param.name; });

}  // namespace
}  // namespace ditserve
