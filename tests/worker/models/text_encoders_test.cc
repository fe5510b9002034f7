#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/models/text/clip_text_model.h"
#include "worker/models/text/t5_encoder.h"

namespace ditserve::worker::text {
namespace {

using testing::ReadTextFile;

class TextEncoders : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = absl::StrCat(::testing::TempDir(), "/text_ref_", getpid());
    std::filesystem::create_directories(dir_);
    const absl::Status ref = testing::RunPythonReference(
        testing::DirectoryOf(__FILE__) + "/text_encoders_reference.py", dir_, dir_ + "/reference.log");
    ASSERT_TRUE(ref.ok()) << ref;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::string dir_;
};
std::string TextEncoders::dir_;

double MaxAbs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST_F(TextEncoders, ClipMatchesTransformers) {
  auto config = ParseClipTextConfig(ReadTextFile(dir_ + "/text_encoder/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = ClipTextModel::Create(*config, at::kFloat);
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir_ + "/text_encoder");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::Status loaded = (*model)->Load(*ckpt);
  ASSERT_TRUE(loaded.ok()) << loaded;
  auto io = weights::SafetensorsCheckpoint::Open(dir_ + "/io.safetensors");
  auto out = (*model)->Forward(*io->Get("clip_ids"));
  ASSERT_TRUE(out.ok()) << out.status();
  const double hidden = MaxAbs(out->last_hidden_state, *io->Get("clip_hidden"));
  const double pooled = MaxAbs(out->pooled, *io->Get("clip_pooled"));
  std::printf("clip: max-abs error hidden %.3g, pooled %.3g\n", hidden, pooled);
  EXPECT_LT(hidden, 1e-5);
  EXPECT_LT(pooled, 1e-5);
  // A CLIPTextModel has no projection; penultimate is hidden_states[-2].
  EXPECT_FALSE(config->with_projection);
  EXPECT_FALSE(out->text_embeds.defined());
  EXPECT_LT(MaxAbs(out->penultimate, *io->Get("clip_penultimate")), 1e-5);
  EXPECT_EQ((*model)->Forward(at::full({1, 78}, 1, at::kLong)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*model)->Forward(at::full({1, 5}, 99, at::kLong)).status().code(), absl::StatusCode::kInvalidArgument);
}

// CLIPTextModelWithProjection as Stable Diffusion 3 uses it: penultimate
// (hidden_states[-2]), pooled and text_embeds, from transformers' own
// layout and from one with the text transformer's keys bare.
TEST_F(TextEncoders, ClipWithProjectionMatchesTransformers) {
  for (const char* sub : {"clip_projection", "clip_projection_bare"}) {
    SCOPED_TRACE(sub);
    auto config = ParseClipTextConfig(ReadTextFile(dir_ + "/" + sub + "/config.json"));
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_TRUE(config->with_projection);
    EXPECT_EQ(config->projection_dim, 40);
    auto model = ClipTextModel::Create(*config, at::kFloat, models::ParameterInit::kUninitialized);
    ASSERT_TRUE(model.ok()) << model.status();
    auto ckpt = weights::SafetensorsCheckpoint::Open(dir_ + "/" + sub);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    absl::Status loaded = (*model)->Load(*ckpt);
    ASSERT_TRUE(loaded.ok()) << loaded;
    auto io = weights::SafetensorsCheckpoint::Open(dir_ + "/io.safetensors");
    auto out = (*model)->Forward(*io->Get("proj_ids"));
    ASSERT_TRUE(out.ok()) << out.status();
    const double hidden = MaxAbs(out->last_hidden_state, *io->Get("proj_hidden"));
    const double penultimate = MaxAbs(out->penultimate, *io->Get("proj_penultimate"));
    const double pooled = MaxAbs(out->pooled, *io->Get("proj_pooled"));
    const double embeds = MaxAbs(out->text_embeds, *io->Get("proj_text_embeds"));
    std::printf("clip with projection (%s): max-abs error hidden %.3g, penultimate %.3g, pooled %.3g, "
                "text_embeds %.3g\n", sub, hidden, penultimate, pooled, embeds);
    EXPECT_EQ(out->text_embeds.sizes(), (std::vector<int64_t>{2, 40}));
    EXPECT_EQ(out->penultimate.sizes(), (std::vector<int64_t>{2, 77, 48}));
    EXPECT_LT(hidden, 1e-5);
    EXPECT_LT(penultimate, 1e-5);
    EXPECT_LT(pooled, 1e-5);
    EXPECT_LT(embeds, 1e-5);
  }
  // A model built without the projection refuses the projection's key
  // rather than dropping it, in both layouts.
  auto config = ParseClipTextConfig(ReadTextFile(dir_ + "/clip_projection/config.json"));
  config->with_projection = false;
  auto model = ClipTextModel::Create(*config, at::kFloat);
  for (const char* sub : {"clip_projection", "clip_projection_bare"}) {
    auto ckpt = weights::SafetensorsCheckpoint::Open(dir_ + "/" + sub);
    ASSERT_TRUE(ckpt.ok());
    const absl::Status s = (*model)->Load(*ckpt);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << sub;
    EXPECT_NE(s.message().find("text_projection.weight"), std::string::npos) << s;
  }
}

TEST_F(TextEncoders, T5MatchesTransformers) {
  auto config = ParseT5Config(ReadTextFile(dir_ + "/text_encoder_2/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = T5Encoder::Create(*config, at::kFloat);
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir_ + "/text_encoder_2");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::Status loaded = (*model)->Load(*ckpt);
  ASSERT_TRUE(loaded.ok()) << loaded;
  auto io = weights::SafetensorsCheckpoint::Open(dir_ + "/io.safetensors");
  auto out = (*model)->Forward(*io->Get("t5_ids"));
  ASSERT_TRUE(out.ok()) << out.status();
  const double err = MaxAbs(*out, *io->Get("t5_hidden"));
  std::printf("t5: max-abs error %.3g\n", err);
  EXPECT_LT(err, 1e-5);
}

TEST(T5RelativePositionBucket, ClosedForm) {
  // Bidirectional, 32 buckets, max distance 128: 16 per direction; exact
  // below 8; log-spaced from 8 to 128; positive offsets add 16.
  const at::Tensor rel = at::tensor({0L, 1L, -1L, 7L, -8L, 8L, 12L, 127L, 128L, 1000L, -1000L});
  const at::Tensor b = T5RelativePositionBucket(rel, 32, 128);
  const auto log_bucket = [](int n) { return 8 + static_cast<int>(std::log(n / 8.0) / std::log(16.0) * 8); };
  const std::vector<int64_t> want = {0, 17, 1, 23, log_bucket(8), 16 + log_bucket(8), 16 + log_bucket(12),
                                     16 + 15, 16 + 15, 31, 15};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(b[i].item<int64_t>(), want[i]) << i;
}

}  // namespace
}  // namespace ditserve::worker::text
