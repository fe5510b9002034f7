// Stable Diffusion 3 / 3.5 end to end through `ditserve-run`, on tiny
// directories made by ditserve-make-model --family sd3: whole generations
// against diffusers' StableDiffusion3Pipeline (same seed, non-square, CFG
// on), and every parallel method against the serial run (a world of one).

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

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

class Sd3Generation : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(absl::StrCat(::testing::TempDir(), "/sd3_generation_", getpid()));
    std::filesystem::create_directories(*root_);
    // SD3.5-Medium's layout (qk RMSNorm, dual attention in blocks 0-1) and
    // SD3's (neither).
    for (const char* variant : {"sd3.5-medium", "sd3"}) {
      const RunResult made = RunOne({BinDir() + "/ditserve-make-model", "--family=sd3",
                                     std::string("--variant=") + variant, "--preset=tiny", "--seed=5",
                                     "--out=" + Model(variant)});
      ASSERT_TRUE(made.exit.ok()) << made.output;
    }
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*root_);
    delete root_;
  }
  static std::string Model(const std::string& variant) { return *root_ + "/" + variant; }

  // ditserve-run with `flags` (plus the common ones) into a fresh directory.
  static std::string Run(const std::string& name, const std::string& variant, std::vector<std::string> flags) {
    const std::string out = *root_ + "/" + name;
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model(variant),
                                     "--output_dir=" + out, "--save_latents",
                                     absl::StrCat("--num_inference_steps=", kSteps), "--seed=7", "--threads=1",
                                     "--device=cpu"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const RunResult r = RunOne(argv);
    EXPECT_TRUE(r.exit.ok()) << absl::StrJoin(argv, " ") << "\n" << r.output;
    return out;
  }
  static std::string* root_;
};
std::string* Sd3Generation::root_ = nullptr;

// The same directory, prompt, seed and settings through diffusers and
// ditserve-run (one rank): final latents within 1e-4, the image within one
// uint8 level, as Flux's pipeline test.
TEST_F(Sd3Generation, MatchesDiffusers) {
  struct Case {
    std::string name, variant, negative_prompt;
    double guidance_scale;  // < 0: the family's default (7)
    int height, width, max_sequence_length;
  };
  const std::vector<Case> cases = {
      // The default CFG against the empty negative prompt.
      {"medium_default_cfg", "sd3.5-medium", "", -1, 80, 48, 12},
      {"sd3_negative", "sd3", "a blurry picture", 4.5, 48, 96, 20},
      {"sd3_no_cfg", "sd3", "", 1.0, 64, 32, 8},
  };
  const std::string prompt = "a red circle on a blue background";
  nlohmann::json spec = nlohmann::json::array();
  for (const Case& c : cases) {
    nlohmann::json j = {{"name", c.name}, {"model", Model(c.variant)}, {"prompt", prompt},
                        {"height", c.height}, {"width", c.width}, {"steps", kSteps}, {"seed", 7},
                        {"max_sequence_length", c.max_sequence_length}};
    j["negative_prompt"] = c.negative_prompt.empty() ? nlohmann::json() : nlohmann::json(c.negative_prompt);
    j["guidance_scale"] = c.guidance_scale < 0 ? nlohmann::json() : nlohmann::json(c.guidance_scale);
    spec.push_back(j);
  }
  const std::string cases_json = *root_ + "/cases.json", expected_path = *root_ + "/expected.safetensors";
  std::ofstream(cases_json) << spec.dump();
  const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/sd3_generation_reference.py",
                                                       expected_path + " " + cases_json, *root_ + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  auto expected = worker::weights::SafetensorsCheckpoint::Open(expected_path);
  ASSERT_TRUE(expected.ok()) << expected.status();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::string> flags = {"--prompt=" + prompt, absl::StrCat("--height=", c.height),
                                      absl::StrCat("--width=", c.width),
                                      absl::StrCat("--max_sequence_length=", c.max_sequence_length), "--nproc=1"};
    if (!c.negative_prompt.empty()) flags.push_back("--negative_prompt=" + c.negative_prompt);
    if (c.guidance_scale >= 0) flags.push_back(absl::StrCat("--guidance_scale=", c.guidance_scale));
    const std::string dir = Run(c.name, c.variant, flags);
    const at::Tensor latents = testing::ReadLatents(dir + "/image-000.latents.safetensors");
    const at::Tensor want_latents = *expected->Get(c.name + ".latents");
    ASSERT_TRUE(latents.defined());
    ASSERT_EQ(latents.sizes(), want_latents.sizes());
    const double latent_err = (latents - want_latents).abs().max().item<double>();
    const testing::RgbImage image = testing::ReadPng(dir + "/image-000.png");
    ASSERT_EQ(image.width, c.width);
    ASSERT_EQ(image.height, c.height);
    const at::Tensor want_image = (*expected->Get(c.name + ".image") * 255).round();
    const at::Tensor got = at::from_blob(const_cast<uint8_t*>(image.rgb.data()), {c.height, c.width, 3}, at::kByte);
    const double image_err = (got.to(at::kFloat) - want_image).abs().max().item<double>();
    std::printf("%-20s latents max-abs error %.3g (max |latent| %.3g), image max error %.0f/255\n", c.name.c_str(),
                latent_err, want_latents.abs().max().item<double>(), image_err);
    EXPECT_LT(latent_err, 1e-4);
    EXPECT_LE(image_err, 1.0);
  }
}

struct ParallelCase {
  std::string name;
  std::vector<std::string> degrees;
  int prompts = 1;
  int max_sequence_length = 11;  // 77 + 11 = 88 text tokens: divides by SP 2 and 4
  int height = 64;               // 4 token rows
};

std::vector<std::string> JobFlags(const ParallelCase& c) {
  std::vector<std::string> f = {absl::StrCat("--max_sequence_length=", c.max_sequence_length),
                                absl::StrCat("--height=", c.height), "--width=48"};
  const char* prompts[] = {"a red circle on a blue background", "a green square on a white background"};
  for (int i = 0; i < c.prompts; ++i) f.push_back(absl::StrCat("--prompt=", prompts[i]));
  return f;
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Every method on SD3.5-Medium's layout with SD3's default CFG (7, against
// the empty prompt). Without PipeFusion (or with every step a warmup step)
// the result is the serial one up to float rounding: latents within 1e-4,
// uint8 values at most 1 apart and rarely (see parallel_generation_test).
TEST_F(Sd3Generation, ParallelMatchesSerial) {
  const std::string sync = absl::StrCat("--warmup_steps=", kSteps);
  const std::vector<ParallelCase> cases = {
      {"u2", {"--nproc=2", "--ulysses_degree=2"}},
      {"r2", {"--nproc=2", "--ring_degree=2"}},
      {"u2r2", {"--nproc=4", "--ulysses_degree=2", "--ring_degree=2"}},
      {"cfg2", {"--nproc=2", "--use_cfg_parallel"}},
      {"cfg2u2", {"--nproc=4", "--use_cfg_parallel", "--ulysses_degree=2"}},
      {"pf2_sync", {"--nproc=2", "--pipefusion_parallel_degree=2", sync}},
      {"cfg2pf2_sync", {"--nproc=4", "--use_cfg_parallel", "--pipefusion_parallel_degree=2", sync}},
      {"dp2", {"--nproc=2", "--data_parallel_degree=2"}, 2},
      // Token counts that do not divide by SP, padded and masked: 89 text
      // tokens (to 90, or 92 for SP 4) and 5 image rows (to 6, or 8).
      {"u2_uneven", {"--nproc=2", "--ulysses_degree=2"}, 1, 12, 80},
      {"r2_uneven", {"--nproc=2", "--ring_degree=2"}, 1, 12, 80},
      {"u2r2_uneven", {"--nproc=4", "--ulysses_degree=2", "--ring_degree=2"}, 1, 12, 80},
  };
  std::map<std::string, std::string> serial;  // job flags -> serial output dir
  for (const ParallelCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string key = absl::StrJoin(job, " ");
    if (!serial.count(key)) {
      serial[key] = Run(absl::StrCat("serial_", serial.size()), "sd3.5-medium", Concat({"--nproc=1"}, job));
    }
    const std::string dir = Run(c.name, "sd3.5-medium", Concat(c.degrees, job));
    testing::ExpectSerialResult(c.name, dir, serial[key], c.prompts);
  }
}

// The 16-channel VAE (SD3's and FLUX.1's width) decoded in bands over 2 and
// 3 ranks: the same latents give the same image as rank 0's whole decode
// (the 4-channel tiny Flux VAE is parallel_generation_test's).
TEST_F(Sd3Generation, ParallelVaeDecodesTheSameImage) {
  const std::vector<ParallelCase> cases = {
      {"vae_u2", {"--nproc=2", "--ulysses_degree=2"}},
      {"vae_dp3", {"--nproc=3", "--data_parallel_degree=3"}},
  };
  for (const ParallelCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string whole = Run(c.name + "_whole", "sd3.5-medium", Concat(c.degrees, job));
    const std::string banded = Run(c.name + "_bands", "sd3.5-medium", Concat(Concat(c.degrees, job), {"--use_parallel_vae"}));
    EXPECT_EQ(testing::ReadTextFile(banded + "/image-000.latents.safetensors"),
              testing::ReadTextFile(whole + "/image-000.latents.safetensors"));
    // Float rounding only (parallel_generation_test says why a few uint8
    // values may sit one level apart).
    const testing::Comparison cmp = testing::CompareRuns(banded, whole, 0);
    std::printf("%s: %d uint8 values differ from the whole decode\n", c.name.c_str(), cmp.differing_values);
    EXPECT_LE(cmp.max_value_diff, 1);
    EXPECT_LE(cmp.differing_values, 25);
  }
}

// PipeFusion after warmup attends one-step-stale K/V: close to serial, not
// equal. Bounds as Flux's (parallel_generation_test): the same picture.
TEST_F(Sd3Generation, PipeFusionStaysCloseToSerial) {
  const std::vector<ParallelCase> cases = {
      {"pf2", {"--nproc=2", "--pipefusion_parallel_degree=2", "--warmup_steps=1"}},
      {"cfg2pf2", {"--nproc=4", "--use_cfg_parallel", "--pipefusion_parallel_degree=2", "--warmup_steps=1"}},
      {"pf2u2_uneven", {"--nproc=4", "--pipefusion_parallel_degree=2", "--ulysses_degree=2", "--warmup_steps=1"},
       1, 12, 80},
  };
  std::map<std::string, std::string> serial;
  for (const ParallelCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string key = absl::StrJoin(job, " ");
    if (!serial.count(key)) {
      serial[key] = Run(absl::StrCat("pserial_", serial.size()), "sd3.5-medium", Concat({"--nproc=1"}, job));
    }
    const std::string dir = Run(c.name, "sd3.5-medium", Concat(c.degrees, job));
    const Comparison cmp = testing::CompareRuns(dir, serial[key], 0);
    std::printf("%-12s latents max-abs %.3g, image PSNR %.1f dB against serial\n", c.name.c_str(), cmp.latent_max_abs,
                cmp.psnr);
    EXPECT_LT(cmp.latent_max_abs, 0.05);
    EXPECT_GT(cmp.psnr, 30);
  }
}

// Family-specific limits reach the user as one-line errors before any rank
// starts.
TEST_F(Sd3Generation, InvalidRequestsFailBeforeAnyWork) {
  struct Bad {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{"--nproc=1", "--height=72"}, "height must be a multiple of 16"},
      // pos_embed_max_size 128 places 128 token rows: 2048 px.
      {{"--nproc=1", "--width=2064"}, "width 2064 gives 129 latent token rows; this model places at most 128"},
      {{"--nproc=1", "--true_cfg_scale=2"},
       "--true_cfg_scale must be 1 for sd3 (its classifier-free guidance scale is guidance_scale), got 2"},
      {{"--nproc=2", "--use_cfg_parallel", "--guidance_scale=1"},
       "--use_cfg_parallel needs classifier-free guidance: guidance_scale > 1"},
      {{"--nproc=1", "--max_sequence_length=513"}, "max_sequence_length"},
  };
  for (const Bad& b : bad) {
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model("sd3.5-medium"), "--prompt=x",
                                     "--output_dir=" + *root_ + "/bad"};
    argv.insert(argv.end(), b.flags.begin(), b.flags.end());
    const RunResult r = RunOne(argv);
    EXPECT_EQ(r.exit.exit_code, 2) << absl::StrJoin(b.flags, " ") << "\n" << r.output;
    EXPECT_NE(r.output.find(b.message), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(*root_ + "/bad"));
  // ditserve-generate runs SD3 on the gang's pipeline with a world of one:
  // the same image as ditserve-run --nproc 1.
  const std::string run_dir = Run("generate_ref", "sd3", {"--prompt=x", "--height=64", "--width=64", "--nproc=1"});
  const RunResult r = RunOne({BinDir() + "/ditserve-generate", "--model=" + Model("sd3"), "--prompt=x",
                              "--height=64", "--width=64", absl::StrCat("--num_inference_steps=", kSteps),
                              "--seed=7", "--threads=1", "--output=" + *root_ + "/x.png"});
  ASSERT_TRUE(r.exit.ok()) << r.output;
  const testing::RgbImage generated = testing::ReadPng(*root_ + "/x.png");
  const testing::RgbImage run = testing::ReadPng(run_dir + "/image-000.png");
  ASSERT_EQ(generated.width, 64);
  ASSERT_EQ(generated.height, 64);
  EXPECT_EQ(generated.rgb, run.rgb);
}

}  // namespace
}  // namespace ditserve
