// Sd3TextEncoder against diffusers' StableDiffusion3Pipeline.encode_prompt
// on a directory written by ditserve-make-model --family sd3 --preset tiny:
// with T5 and with text_encoder_3 null (a copy of the directory whose
// model_index.json says so), at the default and other max_sequence_length.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "worker/families/sd3/sd3_text_encoder.h"
#include "worker/weights/safetensors.h"

namespace ditserve {
namespace {

using testing::ReadTextFile;
using worker::families::Sd3TextEncoder;

const std::vector<std::string> kPrompts = {
    "a red circle on a blue background",
    "wow! a green square!! on white",  // "!" is tokenizer_2's pad token: id 0
    [] {
      std::string s;
      for (int i = 0; i < 30; ++i) s += "a yellow triangle and ";
      return s;
    }(),  // past CLIP's 77 tokens and T5's 40
    "",
    "Café crème – ΣΑΣ 🙂",
};
const std::vector<int> kLengths = {256, 40, 1};

class Sd3TextEncoderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = absl::StrCat(::testing::TempDir(), "/sd3_text_", getpid());
    no_t5_ = dir_ + "_no_t5";
    const testing::CommandResult r =
        testing::RunCommand({testing::BinDir() + "/ditserve-make-model", "--family=sd3", "--preset=tiny",
                             "--out=" + dir_, "--seed=7"});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // The same directory without T5, as diffusers saves a pipeline loaded
    // with text_encoder_3=None: model_index.json names neither
    // text_encoder_3 nor tokenizer_3, whose folders are absent.
    std::filesystem::create_directories(no_t5_);
    for (const char* sub : {"scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer",
                            "vae"}) {
      std::filesystem::create_directory_symlink(dir_ + "/" + sub, no_t5_ + "/" + sub);
    }
    nlohmann::ordered_json index = nlohmann::ordered_json::parse(ReadTextFile(dir_ + "/model_index.json"));
    index["text_encoder_3"] = {nullptr, nullptr};
    index["tokenizer_3"] = {nullptr, nullptr};
    std::ofstream(no_t5_ + "/model_index.json") << index.dump(2);

    const std::string prompts = dir_ + "/prompts.json";
    std::ofstream(prompts) << nlohmann::json(kPrompts).dump();
    std::string lengths;
    for (int n : kLengths) absl::StrAppend(&lengths, " ", n);
    for (const std::string& d : {dir_, no_t5_}) {
      const absl::Status ref =
          testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/sd3_text_encoder_reference.py",
                                      d + " " + d + "/reference.safetensors" + lengths + " < " + prompts,
                                      d + "/reference.log");
      ASSERT_TRUE(ref.ok()) << ref;
    }
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(dir_);
    std::filesystem::remove_all(no_t5_);
  }

  // Every prompt and length against diffusers: float32 max-abs error
  // relative to the reference's largest magnitude.
  static void ExpectMatchesDiffusers(const std::string& dir, bool has_t5) {
    auto encoder = Sd3TextEncoder::Load(dir, at::kFloat, c10::Device(c10::kCPU));
    ASSERT_TRUE(encoder.ok()) << encoder.status();
    EXPECT_EQ((*encoder)->has_t5(), has_t5);
    auto ref = worker::weights::SafetensorsCheckpoint::Open(dir + "/reference.safetensors");
    ASSERT_TRUE(ref.ok()) << ref.status();
    EXPECT_EQ(ref->Get("has_t5")->item<bool>(), has_t5);
    double worst_embeds = 0, worst_pooled = 0;
    for (int n : kLengths) {
      for (size_t i = 0; i < kPrompts.size(); ++i) {
        SCOPED_TRACE(absl::StrCat("prompt ", i, ", max_sequence_length ", n));
        auto out = (*encoder)->Encode(kPrompts[i], n);
        ASSERT_TRUE(out.ok()) << out.status();
        const at::Tensor embeds = *ref->Get(absl::StrCat("embeds_", i, "_", n));
        const at::Tensor pooled = *ref->Get(absl::StrCat("pooled_", i, "_", n));
        ASSERT_EQ(out->sequence.sizes(), embeds.sizes());
        ASSERT_EQ(out->pooled.sizes(), pooled.sizes());
        EXPECT_EQ(out->sequence.size(1), (*encoder)->SequenceTokens(n));
        const auto relative = [](const at::Tensor& a, const at::Tensor& b) {
          return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
        };
        const double e = relative(out->sequence, embeds), p = relative(out->pooled, pooled);
        EXPECT_LT(e, 1e-4);
        EXPECT_LT(p, 1e-4);
        worst_embeds = std::max(worst_embeds, e);
        worst_pooled = std::max(worst_pooled, p);
      }
    }
    std::printf("sd3 text encoder (%s T5): max-abs error relative to max |ref|: prompt_embeds %.3g, "
                "pooled_prompt_embeds %.3g\n", has_t5 ? "with" : "without", worst_embeds, worst_pooled);
  }

  static std::string dir_, no_t5_;
};
std::string Sd3TextEncoderTest::dir_;
std::string Sd3TextEncoderTest::no_t5_;

TEST_F(Sd3TextEncoderTest, MatchesDiffusersWithT5) { ExpectMatchesDiffusers(dir_, true); }

TEST_F(Sd3TextEncoderTest, MatchesDiffusersWithoutT5) { ExpectMatchesDiffusers(no_t5_, false); }

TEST_F(Sd3TextEncoderTest, Dimensions) {
  auto encoder = Sd3TextEncoder::Load(dir_, at::kFloat, c10::Device(c10::kCPU));
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  const worker::families::TextConditioner& text = **encoder;
  // The tiny preset: CLIP-L 32 + CLIP-G 64 wide (projections as wide), T5
  // d_model 128 (the transformer's joint_attention_dim).
  EXPECT_EQ(text.pooled_dim(), 96);
  EXPECT_EQ(text.sequence_dim(), 128);
  EXPECT_EQ(text.default_max_sequence_length(), 256);
  EXPECT_EQ(text.max_sequence_length_limit(), 512);
  EXPECT_EQ(text.SequenceTokens(256), 77 + 256);
  EXPECT_EQ((*encoder)->clip_tokens(), 77);
  auto out = text.Encode("a red circle", 512);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->sequence.sizes(), (std::vector<int64_t>{1, 77 + 512, 128}));
  EXPECT_EQ(out->pooled.sizes(), (std::vector<int64_t>{1, 96}));
  // The CLIP part is zero-padded from 96 to 128 features.
  EXPECT_EQ(out->sequence.narrow(1, 0, 77).narrow(2, 96, 32).abs().max().item<double>(), 0.0);
  auto no_t5 = Sd3TextEncoder::Load(no_t5_, at::kFloat, c10::Device(c10::kCPU));
  ASSERT_TRUE(no_t5.ok()) << no_t5.status();
  EXPECT_EQ((*no_t5)->sequence_dim(), 128);
  EXPECT_EQ((*no_t5)->SequenceTokens(40), 77 + 40);
  out = (*no_t5)->Encode("a red circle", 40);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->sequence.narrow(1, 77, 40).abs().max().item<double>(), 0.0);
  // In bfloat16 the outputs are bfloat16.
  auto bf16 = Sd3TextEncoder::Load(dir_, at::kBFloat16, c10::Device(c10::kCPU));
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  out = (*bf16)->Encode("a red circle", 16);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->sequence.scalar_type(), at::kBFloat16);
  EXPECT_EQ(out->pooled.scalar_type(), at::kBFloat16);
}

TEST_F(Sd3TextEncoderTest, Errors) {
  auto encoder = Sd3TextEncoder::Load(dir_, at::kFloat, c10::Device(c10::kCPU));
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  for (int n : {0, 513}) {
    const absl::Status s = (*encoder)->Encode("x", n).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_NE(s.message().find("max_sequence_length must be in [1, 512]"), std::string::npos) << s;
  }
  EXPECT_EQ((*encoder)->Encode("bad \xff utf8", 8).status().code(), absl::StatusCode::kInvalidArgument);

  const std::string missing = dir_ + "/nowhere";
  absl::Status s = Sd3TextEncoder::Load(missing, at::kFloat, c10::Device(c10::kCPU)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find(missing + "/model_index.json"), std::string::npos) << s;

  // A CLIPTextModel (no projection) as text_encoder_2 names its config.
  const std::string plain = dir_ + "_plain";
  std::filesystem::create_directories(plain);
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    if (entry.path().filename() == "text_encoder_2") continue;
    std::filesystem::create_symlink(entry.path(), plain + "/" + entry.path().filename().string());
  }
  std::filesystem::create_directories(plain + "/text_encoder_2");
  std::filesystem::copy_file(dir_ + "/text_encoder_2/model.safetensors", plain + "/text_encoder_2/model.safetensors");
  nlohmann::json config = nlohmann::json::parse(ReadTextFile(dir_ + "/text_encoder_2/config.json"));
  config["architectures"] = {"CLIPTextModel"};
  std::ofstream(plain + "/text_encoder_2/config.json") << config.dump();
  s = Sd3TextEncoder::Load(plain, at::kFloat, c10::Device(c10::kCPU)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(plain + "/text_encoder_2/config.json: architectures must name "
                                     "CLIPTextModelWithProjection"),
            std::string::npos)
      << s;
  // Missing T5 weights name text_encoder_3.
  std::filesystem::remove(plain + "/text_encoder_3");
  std::ofstream(plain + "/text_encoder_2/config.json") << ReadTextFile(dir_ + "/text_encoder_2/config.json");
  s = Sd3TextEncoder::Load(plain, at::kFloat, c10::Device(c10::kCPU)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find("text_encoder_3"), std::string::npos) << s;
  std::filesystem::remove_all(plain);
}

}  // namespace
}  // namespace ditserve
