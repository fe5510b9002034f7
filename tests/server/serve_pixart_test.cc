// ditserve-server on a PixArt-Σ directory with a CFG-parallel gang of 2:
// GetInfo reports the family and its guidance, Generate and GenerateStream
// return the serial image (ditserve-run, one rank), and PixArt's own limits
// (its guidance field) are INVALID_ARGUMENT naming the field. No family-specific
// code in the server, the client or the gang: the directory decides.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

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

class ServePixArt : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(absl::StrCat(::testing::TempDir(), "/serve_pixart_", getpid()));
    std::filesystem::create_directories(*root_);
    model_ = new std::string(*root_ + "/model");
    const testing::RunResult made =
        testing::RunOne({testing::BinDir() + "/ditserve-make-model", "--family=pixart-sigma", "--preset=tiny",
                         "--out=" + *model_});
    ASSERT_TRUE(made.exit.ok()) << made.output;
    auto server = ServerProcess::Start({"--model=" + *model_, "--spawn_workers", "--device=cpu", "--threads=1",
                                        "--use_cfg_parallel", "--max_prompt_bytes=64",
                                        absl::StrCat("--default_steps=", kSteps)});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    ASSERT_TRUE(server_->WaitHealth("SERVING", absl::Seconds(300)).ok()) << server_->Log();
  }
  static void TearDownTestSuite() {
    delete server_;
    std::filesystem::remove_all(*root_);
    delete root_;
    delete model_;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = v1::GenerationService::NewStub(server_->channel());
  }

  // The serial run's image for the same request (one rank, the same
  // defaults: CFG 4.5 against the empty prompt, max_sequence_length 300).
  static testing::DecodedImage Serial(int height, int width, uint64_t seed) {
    const std::string out = absl::StrCat(*root_, "/serial_", height, "x", width, "_", seed);
    const testing::RunResult r = testing::RunOne(
        {testing::BinDir() + "/ditserve-run", "--nproc=1", "--model=" + *model_, std::string("--prompt=") + kPrompt,
         absl::StrCat("--height=", height), absl::StrCat("--width=", width),
         absl::StrCat("--num_inference_steps=", kSteps), absl::StrCat("--seed=", seed), "--threads=1",
         "--device=cpu", "--output_dir=" + out});
    EXPECT_TRUE(r.exit.ok()) << r.output;
    std::ifstream in(out + "/image-000.png", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto decoded = testing::DecodePng(bytes);
    EXPECT_TRUE(decoded.ok()) << decoded.status();
    return decoded.ok() ? *decoded : testing::DecodedImage{};
  }

  // CFG parallel against one rank: equal up to float rounding through the
  // VAE (at most one uint8 level, see parallel_generation_test).
  static void ExpectSerial(const std::string& png, int height, int width, uint64_t seed) {
    auto got = testing::DecodePng(png);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->width, width);
    EXPECT_EQ(got->height, height);
    const testing::DecodedImage want = Serial(height, width, seed);
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

  static std::string* root_;
  static std::string* model_;
  static ServerProcess* server_;
  std::unique_ptr<v1::GenerationService::Stub> stub_;
};
std::string* ServePixArt::root_ = nullptr;
std::string* ServePixArt::model_ = nullptr;
ServerProcess* ServePixArt::server_ = nullptr;

TEST_F(ServePixArt, GetInfoReportsTheFamilyAndItsGuidance) {
  grpc::ClientContext context;
  v1::GetInfoResponse info;
  ASSERT_TRUE(stub_->GetInfo(&context, v1::GetInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_family(), "pixart");
  EXPECT_EQ(info.default_guidance_scale(), 4.5);
  EXPECT_EQ(info.cfg_scale_field(), "guidance_scale");
  EXPECT_FALSE(info.uses_guidance_embedding());
  EXPECT_EQ(info.default_size(), 64);  // the tiny preset's transformer sample_size 8 x VAE scale 8
  EXPECT_EQ(info.limits().size_multiple(), 16);
  EXPECT_EQ(info.parallel().world_size(), 2);
  EXPECT_TRUE(info.parallel().use_cfg_parallel());
  EXPECT_NE(info.transformer_config_json().find("\"caption_channels\""), std::string::npos);
}

TEST_F(ServePixArt, GenerateReturnsTheSerialImage) {
  grpc::ClientContext context;
  v1::GenerateResponse response;
  const grpc::Status status = stub_->Generate(&context, Request(80, 48, 11), &response);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << server_->Log();
  ASSERT_EQ(response.images_size(), 1);
  EXPECT_EQ(response.images(0).seed(), 11u);
  ExpectSerial(response.images(0).data(), 80, 48, 11);
}

TEST_F(ServePixArt, GenerateStreamSendsEveryStepThenTheSerialImage) {
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

TEST_F(ServePixArt, FamilyLimitsAreInvalidArgumentNamingTheField) {
  struct Case {
    std::string message;
    std::function<void(v1::GenerateRequest&)> edit;
  };
  const std::vector<Case> cases = {
      {"height must be a multiple of 16", [](auto& r) { r.set_height(72); }},
      {"prompt must be at most 64", [](auto& r) { r.set_prompt(std::string(65, 'x')); }},
      {"true_cfg_scale must be unset or 1 for this model (pixart)", [](auto& r) { r.set_true_cfg_scale(2); }},
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

}  // namespace
}  // namespace ditserve
