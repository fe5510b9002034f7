#include "worker/families/flux/flux_pipeline.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::families {
namespace {


class FluxPipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = absl::StrCat(::testing::TempDir(), "/flux_pipe_", getpid());
    std::filesystem::create_directories(dir_);
    const absl::Status ref = testing::RunPythonReference(
        testing::DirectoryOf(__FILE__) + "/flux_pipeline_reference.py", dir_, dir_ + "/reference.log");
    ASSERT_TRUE(ref.ok()) << ref;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::string dir_;
};
std::string FluxPipelineTest::dir_;

FluxRequest Request() {
  FluxRequest r;
  r.prompt = "a red circle on a blue background";
  r.height = 24;
  r.width = 32;
  r.num_inference_steps = 3;
  r.guidance_scale = 3.5;
  r.seed = 42;
  r.max_sequence_length = 16;
  return r;
}

// The same directory, prompt, seed and settings through diffusers'
// FluxPipeline and ours: the final latents and the image agree.
TEST_F(FluxPipelineTest, MatchesDiffusers) {
  auto pipe = FluxPipeline::Load(dir_ + "/model", at::kFloat);
  ASSERT_TRUE(pipe.ok()) << pipe.status();
  EXPECT_EQ((*pipe)->size_multiple(), 4);
  auto expected = weights::SafetensorsCheckpoint::Open(dir_ + "/expected.safetensors");
  ASSERT_TRUE(expected.ok()) << expected.status();
  for (const std::string variant : {"plain", "cfg"}) {
    FluxRequest r = Request();
    if (variant == "cfg") {
      r.negative_prompt = "green square";
      r.true_cfg_scale = 2.0;
    }
    int steps_seen = 0;
    auto result = (*pipe)->Generate(r, [&](int step, int total) {
      EXPECT_EQ(step, ++steps_seen);
      EXPECT_EQ(total, 3);
      return true;
    });
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(steps_seen, 3);
    const at::Tensor want_latents = *expected->Get(variant + ".latents");
    const double latent_err = (result->latents - want_latents).abs().max().item<double>();
    // diffusers' image in [0, 1]; ours uint8.
    const at::Tensor want_image = (*expected->Get(variant + ".image") * 255).round();
    ASSERT_EQ(result->image.sizes(), (std::vector<int64_t>{24, 32, 3}));
    const double image_err = (result->image.to(at::kFloat) - want_image).abs().max().item<double>();
    std::printf("%s: latents max-abs error %.3g, image max error %.0f/255\n", variant.c_str(), latent_err, image_err);
    EXPECT_LT(latent_err, 1e-4);
    EXPECT_LE(image_err, 1.0);
  }
}

TEST_F(FluxPipelineTest, SameSeedSameImageAndErrors) {
  auto pipe = FluxPipeline::Load(dir_ + "/model", at::kFloat);
  ASSERT_TRUE(pipe.ok()) << pipe.status();
  auto a = (*pipe)->Generate(Request());
  auto b = (*pipe)->Generate(Request());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(at::equal(a->image, b->image));
  FluxRequest other = Request();
  other.seed = 43;
  EXPECT_FALSE(at::equal((*pipe)->Generate(other)->image, a->image));
  FluxRequest bad = Request();
  bad.height = 26;
  EXPECT_EQ((*pipe)->Generate(bad).status().message(), "height must be a multiple of 4 in [4, 8192], got 26");
  bad = Request();
  bad.num_inference_steps = 0;
  EXPECT_EQ((*pipe)->Generate(bad).status().message(), "num_inference_steps must be in [1, 1000], got 0");
  // Cancellation after the first step.
  auto cancelled = (*pipe)->Generate(Request(), [](int, int) { return false; });
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(FluxPipeline::Load(dir_ + "/nowhere", at::kFloat).status().code(), absl::StatusCode::kNotFound);
  const std::string empty = dir_ + "/empty";
  std::filesystem::create_directories(empty);
  EXPECT_EQ(FluxPipeline::Load(empty, at::kFloat).status().message(), absl::StrCat("cannot open ", empty, "/model_index.json"));
}

}  // namespace
}  // namespace ditserve::worker::families
