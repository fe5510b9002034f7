// HunyuanDiT end to end through `ditserve-run`, on tiny directories made by
// ditserve-make-model --family hunyuandit (six blocks: two long skips):
// whole generations against diffusers' HunyuanDiTPipeline (same seed,
// non-square, CFG on and off, a negative prompt, Chinese and accented
// prompts, DDPM with v-prediction and its per-step noise), every parallel
// method against the serial run (PipeFusion 2 and 3 with the skips crossing
// stage boundaries), and the one-line errors.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/harness/binaries.h"
#include "tests/harness/generation_outputs.h"
#include "tests/harness/reference.h"
#include "worker/weights/safetensors.h"

namespace ditserve {
namespace {

using testing::BinDir;
using testing::Comparison;
using testing::RunOne;
using testing::RunResult;

constexpr int kSteps = 4;

class HunyuanDiTGeneration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(absl::StrCat(::testing::TempDir(), "/hunyuandit_generation_", getpid()));
    std::filesystem::create_directories(*root_);
    const RunResult made = RunOne({BinDir() + "/ditserve-make-model", "--family=hunyuandit", "--preset=tiny",
                                   "--seed=5", "--out=" + Model()});
    ASSERT_TRUE(made.exit.ok()) << made.output;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*root_);
    delete root_;
  }
  static std::string Model() { return *root_ + "/hunyuandit"; }

  static std::string Run(const std::string& name, std::vector<std::string> flags) {
    const std::string out = *root_ + "/" + name;
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model(), "--output_dir=" + out,
                                     "--save_latents", absl::StrCat("--num_inference_steps=", kSteps), "--seed=7",
                                     "--threads=1", "--device=cpu"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const RunResult r = RunOne(argv);
    EXPECT_TRUE(r.exit.ok()) << absl::StrJoin(argv, " ") << "\n" << r.output;
    return out;
  }
  static std::string* root_;
};
std::string* HunyuanDiTGeneration::root_ = nullptr;

// ditserve-run (one rank) against diffusers: final latents within 1e-4 of
// their magnitude, the image within one uint8 level.
TEST_F(HunyuanDiTGeneration, MatchesDiffusers) {
  struct Case {
    std::string name, prompt, negative_prompt;
    double guidance_scale;  // < 0: the family's default (5.0)
    int height, width;
  };
  const std::vector<Case> cases = {
      {"default", "A Red Circle on a blue background", "", -1, 64, 96},
      {"negative", "a red circle", "a blurry picture", 3.0, 80, 48},
      {"no_cfg", "a green square", "", 1.0, 48, 64},
      {"chinese", "一个宇航员在骑马, Café «très» bien!", "", -1, 64, 64},
  };
  nlohmann::json spec = nlohmann::json::array();
  for (const Case& c : cases) {
    nlohmann::json j = {{"name", c.name}, {"model", Model()}, {"prompt", c.prompt}, {"height", c.height},
                        {"width", c.width}, {"steps", kSteps}, {"seed", 7}};
    j["negative_prompt"] = c.negative_prompt.empty() ? nlohmann::json() : nlohmann::json(c.negative_prompt);
    j["guidance_scale"] = c.guidance_scale < 0 ? nlohmann::json() : nlohmann::json(c.guidance_scale);
    spec.push_back(j);
  }
  const std::string cases_json = *root_ + "/cases.json", expected_path = *root_ + "/expected.safetensors";
  std::ofstream(cases_json) << spec.dump();
  const absl::Status ref = testing::RunPythonReference(
      testing::DirectoryOf(__FILE__) + "/cross_attention_generation_reference.py",
      expected_path + " " + cases_json, *root_ + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  auto expected = worker::weights::SafetensorsCheckpoint::Open(expected_path);
  ASSERT_TRUE(expected.ok()) << expected.status();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::string> flags = {"--prompt=" + c.prompt, absl::StrCat("--height=", c.height),
                                      absl::StrCat("--width=", c.width), "--nproc=1"};
    if (!c.negative_prompt.empty()) flags.push_back("--negative_prompt=" + c.negative_prompt);
    if (c.guidance_scale >= 0) flags.push_back(absl::StrCat("--guidance_scale=", c.guidance_scale));
    const std::string dir = Run(c.name, flags);
    const at::Tensor latents = testing::ReadLatents(dir + "/image-000.latents.safetensors");
    const at::Tensor want_latents = *expected->Get(c.name + ".latents");
    ASSERT_TRUE(latents.defined());
    ASSERT_EQ(latents.sizes(), want_latents.sizes());
    const double scale = std::max(1.0, want_latents.abs().max().item<double>());
    const double latent_err = (latents - want_latents).abs().max().item<double>();
    const testing::RgbImage image = testing::ReadPng(dir + "/image-000.png");
    ASSERT_EQ(image.width, c.width);
    ASSERT_EQ(image.height, c.height);
    const at::Tensor want_image = (*expected->Get(c.name + ".image") * 255).round();
    const at::Tensor got = at::from_blob(const_cast<uint8_t*>(image.rgb.data()), {c.height, c.width, 3}, at::kByte);
    const double image_err = (got.to(at::kFloat) - want_image).abs().max().item<double>();
    std::printf("%-10s latents max-abs error %.3g (max |latent| %.3g), image max error %.0f/255\n", c.name.c_str(),
                latent_err, scale, image_err);
    EXPECT_LT(latent_err, 1e-4 * scale);
    EXPECT_LE(image_err, 1.0);
  }
}

struct ParallelCase {
  std::string name;
  std::vector<std::string> degrees;
  int prompts = 1;
  int height = 64;  // 4 token rows
};

std::vector<std::string> JobFlags(const ParallelCase& c) {
  std::vector<std::string> f = {absl::StrCat("--height=", c.height), "--width=48"};
  const char* prompts[] = {"a red circle on a blue background", "一只绿色的猫"};
  for (int i = 0; i < c.prompts; ++i) f.push_back(absl::StrCat("--prompt=", prompts[i]));
  return f;
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Every method on the tiny model with its default CFG (5.0) and DDPM
// (v-prediction, fresh noise each step): without PipeFusion (or with every
// step a warmup step) the result is the serial one up to float rounding.
// PipeFusion 2 cuts blocks [0, 3) | [3, 6) and PipeFusion 3 [0, 2) | [2, 4) |
// [4, 6): two skips cross every boundary (block 0's output to block 5, 1's
// to 4), the latter relayed through the middle stage.
TEST_F(HunyuanDiTGeneration, ParallelMatchesSerial) {
  const std::string sync = absl::StrCat("--warmup_steps=", kSteps);
  const std::vector<ParallelCase> cases = {
      {"u2", {"--nproc=2", "--ulysses_degree=2"}},
      {"r2", {"--nproc=2", "--ring_degree=2"}},
      {"u2r2", {"--nproc=4", "--ulysses_degree=2", "--ring_degree=2"}},
      {"cfg2", {"--nproc=2", "--use_cfg_parallel"}},
      {"pf2_sync", {"--nproc=2", "--pipefusion_parallel_degree=2", sync}},
      {"pf3_sync", {"--nproc=3", "--pipefusion_parallel_degree=3", sync}},
      {"cfg2pf2_sync", {"--nproc=4", "--use_cfg_parallel", "--pipefusion_parallel_degree=2", sync}},
      {"dp2", {"--nproc=2", "--data_parallel_degree=2"}, 2},
      // 5 image rows: padded to 6 (or 8) and masked.
      {"u2_uneven", {"--nproc=2", "--ulysses_degree=2"}, 1, 80},
  };
  std::map<std::string, std::string> serial;
  for (const ParallelCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string key = absl::StrJoin(job, " ");
    if (!serial.count(key)) serial[key] = Run(absl::StrCat("serial_", serial.size()), Concat({"--nproc=1"}, job));
    const std::string dir = Run(c.name, Concat(c.degrees, job));
    testing::ExpectSerialResult(c.name, dir, serial[key], c.prompts,
                                std::max(1.0, testing::MaxAbsLatent(serial[key], 0)));
  }
}

// PipeFusion after warmup: one-step-stale self-attention K/V (the cross-
// attention K/V are the text's, computed once; the skips are the patch's
// own, fresh): close to serial. HunyuanDiT's q/k LayerNorm makes its
// attention sharp, so a stale step matters more than PixArt's: 16 steps
// (neighbouring steps close) rather than 4 (36 dB).
TEST_F(HunyuanDiTGeneration, PipeFusionStaysCloseToSerial) {
  const ParallelCase c{"pf2", {"--nproc=2", "--pipefusion_parallel_degree=2", "--warmup_steps=1"}};
  const std::vector<std::string> job = Concat(JobFlags(c), {"--num_inference_steps=16"});
  const std::string serial = Run("pserial", Concat({"--nproc=1"}, job));
  const std::string dir = Run(c.name, Concat(c.degrees, job));
  const Comparison cmp = testing::CompareRuns(dir, serial, 0);
  const double scale = std::max(1.0, testing::MaxAbsLatent(serial, 0));
  std::printf("pf2 latents max-abs %.3g (max |latent| %.3g), image PSNR %.1f dB against serial\n", cmp.latent_max_abs,
              scale, cmp.psnr);
  EXPECT_LT(cmp.latent_max_abs, 0.05 * scale);
  EXPECT_GT(cmp.psnr, 30);
}

TEST_F(HunyuanDiTGeneration, InvalidRequestsFailBeforeAnyWork) {
  struct Bad {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{"--nproc=1", "--height=72"}, "height must be a multiple of 16"},
      {{"--nproc=1", "--true_cfg_scale=2"},
       "--true_cfg_scale must be 1 for hunyuandit (its classifier-free guidance scale is guidance_scale), got 2"},
      {{"--nproc=1", "--max_sequence_length=257"}, "--max_sequence_length must be in [0, 256] for this model"},
      {{"--nproc=1", "--num_inference_steps=1001"}, "num_inference_steps"},
  };
  for (const Bad& b : bad) {
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model(), "--prompt=x",
                                     "--output_dir=" + *root_ + "/bad"};
    argv.insert(argv.end(), b.flags.begin(), b.flags.end());
    const RunResult r = RunOne(argv);
    EXPECT_EQ(r.exit.exit_code, 2) << absl::StrJoin(b.flags, " ") << "\n" << r.output;
    EXPECT_NE(r.output.find(b.message), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(*root_ + "/bad"));
}

}  // namespace
}  // namespace ditserve
