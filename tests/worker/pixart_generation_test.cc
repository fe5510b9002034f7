// PixArt-Σ and PixArt-α end to end through `ditserve-run`, on tiny
// directories made by ditserve-make-model --family pixart-sigma|pixart-alpha:
// whole generations against diffusers' pipelines (same seed, non-square,
// CFG on and off, a negative prompt, α's micro-conditions and resolution
// binning, and the
// directory's scheduler rewritten to Euler, DDIM and DDPM), every parallel method
// against the serial run, and the one-line errors.

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

class PixArtGeneration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(absl::StrCat(::testing::TempDir(), "/pixart_generation_", getpid()));
    std::filesystem::create_directories(*root_);
    for (const char* family : {"pixart-sigma", "pixart-alpha"}) {
      const RunResult made = RunOne({BinDir() + "/ditserve-make-model", std::string("--family=") + family,
                                     "--preset=tiny", "--seed=5", "--out=" + Model(family)});
      ASSERT_TRUE(made.exit.ok()) << made.output;
    }
    // The Σ directory with its scheduler swapped, as a user swaps it: only
    // scheduler_config.json changes.
    const auto with_scheduler = [](const std::string& name, const nlohmann::json& config) {
      std::filesystem::copy(Model("pixart-sigma"), Model(name), std::filesystem::copy_options::recursive);
      std::ofstream(Model(name) + "/scheduler/scheduler_config.json") << config.dump(2);
    };
    with_scheduler("sigma-euler", {{"_class_name", "EulerDiscreteScheduler"}, {"beta_schedule", "linear"},
                                   {"beta_start", 0.0001}, {"beta_end", 0.02}, {"num_train_timesteps", 1000},
                                   {"prediction_type", "epsilon"}, {"timestep_spacing", "leading"},
                                   {"steps_offset", 1}});
    with_scheduler("sigma-ddpm", {{"_class_name", "DDPMScheduler"}, {"beta_schedule", "linear"},
                                  {"clip_sample", false}, {"steps_offset", 1}, {"variance_type", "fixed_small"}});
    with_scheduler("sigma-ddim", {{"_class_name", "DDIMScheduler"}, {"beta_schedule", "scaled_linear"},
                                  {"beta_start", 0.00085}, {"beta_end", 0.012}, {"clip_sample", false},
                                  {"timestep_spacing", "trailing"}});
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*root_);
    delete root_;
  }
  static std::string Model(const std::string& name) { return *root_ + "/" + name; }

  static std::string Run(const std::string& name, const std::string& model, std::vector<std::string> flags) {
    const std::string out = *root_ + "/" + name;
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model(model), "--output_dir=" + out,
                                     "--save_latents", absl::StrCat("--num_inference_steps=", kSteps), "--seed=7",
                                     "--threads=1", "--device=cpu"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const RunResult r = RunOne(argv);
    EXPECT_TRUE(r.exit.ok()) << absl::StrJoin(argv, " ") << "\n" << r.output;
    return out;
  }
  static std::string* root_;
};
std::string* PixArtGeneration::root_ = nullptr;

// ditserve-run (one rank) against diffusers: final latents within 1e-4 of
// their magnitude (a random DDPM-trained model's latents reach hundreds),
// the image within one uint8 level.
TEST_F(PixArtGeneration, MatchesDiffusers) {
  struct Case {
    std::string name, model, prompt, negative_prompt;
    double guidance_scale;  // < 0: the family's default (4.5)
    int height, width, max_sequence_length;
  };
  const std::vector<Case> cases = {
      {"sigma_default", "pixart-sigma", "A Red Circle on a blue background  ", "", -1, 64, 96, 0},
      {"sigma_negative", "pixart-sigma", "a red circle", "a blurry picture", 3.0, 80, 48, 20},
      {"sigma_no_cfg", "pixart-sigma", "a green square", "", 1.0, 48, 64, 8},
      // α's sample_size 128 bins: 48×80 (ratio 0.6) is generated at the
      // 768×1280 bin (96×160 latents, the micro-conditions at that size) and
      // resized back, as diffusers does by default.
      {"alpha_binned", "pixart-alpha", "a red circle on a blue background", "", -1, 48, 80, 0},
      {"sigma_euler", "sigma-euler", "a red circle", "", -1, 64, 48, 16},
      {"sigma_ddim", "sigma-ddim", "a red circle", "", 2.0, 48, 48, 16},
      // DDPM: fresh noise from the request's generator at every step but
      // the last, after its initial latents, as diffusers draws it.
      {"sigma_ddpm", "sigma-ddpm", "a red circle", "", -1, 64, 80, 16},
  };
  nlohmann::json spec = nlohmann::json::array();
  for (const Case& c : cases) {
    // max_sequence_length 0: the pipeline's default (Σ 300, α 120).
    const int length = c.max_sequence_length > 0 ? c.max_sequence_length : (c.model == "pixart-alpha" ? 120 : 300);
    nlohmann::json j = {{"name", c.name}, {"model", Model(c.model)}, {"prompt", c.prompt},
                        {"height", c.height}, {"width", c.width}, {"steps", kSteps}, {"seed", 7},
                        {"max_sequence_length", length}};
    j["negative_prompt"] = c.negative_prompt.empty() ? nlohmann::json() : nlohmann::json(c.negative_prompt);
    j["guidance_scale"] = c.guidance_scale < 0 ? nlohmann::json() : nlohmann::json(c.guidance_scale);
    spec.push_back(j);
  }
  const std::string cases_json = *root_ + "/cases.json", expected_path = *root_ + "/expected.safetensors";
  std::ofstream(cases_json) << spec.dump();
  const absl::Status ref = testing::RunPythonReference(
      testing::DirectoryOf(__FILE__) + "/cross_attention_generation_reference.py", expected_path + " " + cases_json,
      *root_ + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  auto expected = worker::weights::SafetensorsCheckpoint::Open(expected_path);
  ASSERT_TRUE(expected.ok()) << expected.status();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::string> flags = {"--prompt=" + c.prompt, absl::StrCat("--height=", c.height),
                                      absl::StrCat("--width=", c.width), "--nproc=1"};
    if (c.max_sequence_length > 0) flags.push_back(absl::StrCat("--max_sequence_length=", c.max_sequence_length));
    if (!c.negative_prompt.empty()) flags.push_back("--negative_prompt=" + c.negative_prompt);
    if (c.guidance_scale >= 0) flags.push_back(absl::StrCat("--guidance_scale=", c.guidance_scale));
    const std::string dir = Run(c.name, c.model, flags);
    const at::Tensor latents = testing::ReadLatents(dir + "/image-000.latents.safetensors");
    const at::Tensor want_latents = *expected->Get(c.name + ".latents");
    ASSERT_TRUE(latents.defined());
    ASSERT_EQ(latents.sizes(), want_latents.sizes());
    if (c.name == "alpha_binned") {
      EXPECT_EQ(latents.size(1), 48 * 80);  // the 768×1280 bin's tokens
    }
    const double scale = std::max(1.0, want_latents.abs().max().item<double>());
    const double latent_err = (latents - want_latents).abs().max().item<double>();
    const testing::RgbImage image = testing::ReadPng(dir + "/image-000.png");
    ASSERT_EQ(image.width, c.width);
    ASSERT_EQ(image.height, c.height);
    const at::Tensor want_image = (*expected->Get(c.name + ".image") * 255).round();
    const at::Tensor got = at::from_blob(const_cast<uint8_t*>(image.rgb.data()), {c.height, c.width, 3}, at::kByte);
    const double image_err = (got.to(at::kFloat) - want_image).abs().max().item<double>();
    std::printf("%-16s latents max-abs error %.3g (max |latent| %.3g), image max error %.0f/255\n", c.name.c_str(),
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
  std::string model = "pixart-sigma";
};

std::vector<std::string> JobFlags(const ParallelCase& c) {
  std::vector<std::string> f = {"--max_sequence_length=24", absl::StrCat("--height=", c.height), "--width=48"};
  const char* prompts[] = {"a red circle on a blue background", "a green square on a white background"};
  for (int i = 0; i < c.prompts; ++i) f.push_back(absl::StrCat("--prompt=", prompts[i]));
  return f;
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Every method on PixArt-Σ with its default CFG (4.5) and DPM-Solver++ 2M:
// the text is whole on every rank (cross-attention), the solver's history
// follows each rank's token ranges. Without PipeFusion (or with every step
// a warmup step) the result is the serial one up to float rounding.
TEST_F(PixArtGeneration, ParallelMatchesSerial) {
  const std::string sync = absl::StrCat("--warmup_steps=", kSteps);
  const std::vector<ParallelCase> cases = {
      {"u2", {"--nproc=2", "--ulysses_degree=2"}},
      {"r2", {"--nproc=2", "--ring_degree=2"}},
      {"u2r2", {"--nproc=4", "--ulysses_degree=2", "--ring_degree=2"}},
      {"cfg2", {"--nproc=2", "--use_cfg_parallel"}},
      {"pf2_sync", {"--nproc=2", "--pipefusion_parallel_degree=2", sync}},
      {"cfg2pf2_sync", {"--nproc=4", "--use_cfg_parallel", "--pipefusion_parallel_degree=2", sync}},
      {"dp2", {"--nproc=2", "--data_parallel_degree=2"}, 2},
      // 5 image rows: padded to 6 (or 8) and masked.
      {"u2_uneven", {"--nproc=2", "--ulysses_degree=2"}, 1, 80},
      {"u2r2_uneven", {"--nproc=4", "--ulysses_degree=2", "--ring_degree=2"}, 1, 80},
      // DDPM's per-step noise is each request's own, drawn alike on every
      // rank and sliced to its tokens.
      {"ddpm_u2", {"--nproc=2", "--ulysses_degree=2"}, 1, 64, "sigma-ddpm"},
      {"ddpm_pf2_sync", {"--nproc=2", "--pipefusion_parallel_degree=2", sync}, 1, 64, "sigma-ddpm"},
      {"ddpm_dp2", {"--nproc=2", "--data_parallel_degree=2"}, 2, 64, "sigma-ddpm"},
  };
  std::map<std::string, std::string> serial;
  for (const ParallelCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string key = c.model + " " + absl::StrJoin(job, " ");
    if (!serial.count(key)) {
      serial[key] = Run(absl::StrCat("serial_", serial.size()), c.model, Concat({"--nproc=1"}, job));
    }
    const std::string dir = Run(c.name, c.model, Concat(c.degrees, job));
    testing::ExpectSerialResult(c.name, dir, serial[key], c.prompts,
                                std::max(1.0, testing::MaxAbsLatent(serial[key], 0)));
  }
}

// PipeFusion after warmup: one-step-stale self-attention K/V (the cross-
// attention K/V are the text's, computed once): close to serial.
TEST_F(PixArtGeneration, PipeFusionStaysCloseToSerial) {
  const std::vector<ParallelCase> cases = {
      {"pf2", {"--nproc=2", "--pipefusion_parallel_degree=2", "--warmup_steps=1"}},
      {"cfg2pf2", {"--nproc=4", "--use_cfg_parallel", "--pipefusion_parallel_degree=2", "--warmup_steps=1"}},
  };
  std::map<std::string, std::string> serial;
  for (const ParallelCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string key = absl::StrJoin(job, " ");
    if (!serial.count(key)) {
      serial[key] = Run(absl::StrCat("pserial_", serial.size()), "pixart-sigma", Concat({"--nproc=1"}, job));
    }
    const std::string dir = Run(c.name, "pixart-sigma", Concat(c.degrees, job));
    const Comparison cmp = testing::CompareRuns(dir, serial[key], 0);
    const double scale = std::max(1.0, testing::MaxAbsLatent(serial[key], 0));
    std::printf("%-12s latents max-abs %.3g (max |latent| %.3g), image PSNR %.1f dB against serial\n",
                c.name.c_str(), cmp.latent_max_abs, scale, cmp.psnr);
    EXPECT_LT(cmp.latent_max_abs, 0.05 * scale);
    EXPECT_GT(cmp.psnr, 30);
  }
}

TEST_F(PixArtGeneration, InvalidRequestsFailBeforeAnyWork) {
  struct Bad {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{"--nproc=1", "--height=72"}, "height must be a multiple of 16"},
      {{"--nproc=1", "--true_cfg_scale=2"},
       "--true_cfg_scale must be 1 for pixart (its classifier-free guidance scale is guidance_scale), got 2"},
      {{"--nproc=2", "--use_cfg_parallel", "--guidance_scale=1"},
       "--use_cfg_parallel needs classifier-free guidance: guidance_scale > 1"},
      {{"--nproc=1", "--max_sequence_length=301"}, "--max_sequence_length must be in [0, 300] for this model"},
      {{"--nproc=1", "--num_inference_steps=1001"}, "num_inference_steps"},
  };
  for (const Bad& b : bad) {
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model("pixart-sigma"), "--prompt=x",
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
