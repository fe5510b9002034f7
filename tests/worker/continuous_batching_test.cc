// Step-level continuous batching (issue 26) end to end: ditserve-run
// --join_schedule runs prompts as a running set that they join and leave at
// different step boundaries, with different step counts, and one is
// cancelled mid-run. Every finished image must be the image its request
// gives run alone (a one-prompt batch job, the classic path), to batching's
// rounding, for every family and under every parallel method (USP, CFG
// parallel, data parallel, PipeFusion).

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/harness/binaries.h"
#include "tests/harness/generation_outputs.h"

namespace ditserve {
namespace {

using testing::BinDir;
using testing::RunOne;
using testing::RunResult;

// Prompt i runs kSteps[i] steps and joins at set step kJoins[i]; prompt 3
// is cancelled at set step 5 (after 3 of its 5 steps). Memberships over
// the set's steps: {0}, {0,1}, {0,1,3}, {0,1,3,2}, {1,3,2}, {1,2}, {1}.
constexpr const char* kSchedule = "0:4,1:6,3:3,2:5:5";
const std::vector<std::string> kPrompts = {"a red circle on a blue background", "a green square on a white background",
                                           "a yellow triangle on a black background", "a cat that will be cancelled"};
constexpr int kStepsOf[] = {4, 6, 3};
constexpr int kFinished = 3;

class ContinuousBatching : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(absl::StrCat(::testing::TempDir(), "/continuous_batching_", getpid()));
    std::filesystem::create_directories(*root_);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*root_);
    delete root_;
  }
  static std::string Path(const std::string& name) { return *root_ + "/" + name; }

  static void MakeModel(const std::string& name, std::vector<std::string> flags) {
    std::vector<std::string> argv = {BinDir() + "/ditserve-make-model", "--seed=5", "--out=" + Path(name)};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const RunResult made = RunOne(argv);
    ASSERT_TRUE(made.exit.ok()) << made.output;
  }

  // ditserve-run of `model` into a fresh directory; returns its output.
  static std::string Run(const std::string& model, const std::string& out, std::vector<std::string> flags) {
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Path(model), "--output_dir=" + Path(out),
                                     "--save_latents", "--seed=7", "--threads=1", "--device=cpu"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const RunResult r = RunOne(argv);
    EXPECT_TRUE(r.exit.ok()) << absl::StrJoin(argv, " ") << "\n" << r.output;
    return r.output;
  }

  // Each finished prompt run alone (its own batch job, with its own seed
  // and step count), its files renamed to the prompt's index in the set.
  // `per_prompt[i]`: prompt i's own flags besides `flags`.
  static std::string RunAlone(const std::string& model, const std::string& name, const std::vector<std::string>& flags,
                              const std::vector<std::vector<std::string>>& per_prompt = {}) {
    const std::string alone = name + "_alone";
    std::filesystem::create_directories(Path(alone));
    for (int i = 0; i < kFinished; ++i) {
      const std::string one = absl::StrCat(name, "_alone_", i);
      std::vector<std::string> f = flags;
      if (i < static_cast<int>(per_prompt.size())) f.insert(f.end(), per_prompt[i].begin(), per_prompt[i].end());
      f.push_back("--prompt=" + kPrompts[i]);
      f.push_back(absl::StrCat("--seed=", 7 + i));
      f.push_back(absl::StrCat("--num_inference_steps=", kStepsOf[i]));
      Run(model, one, f);
      for (const char* ext : {".png", ".latents.safetensors"}) {
        std::filesystem::copy_file(Path(one) + "/image-000" + ext, absl::StrCat(Path(alone), "/image-00", i, ext),
                                   std::filesystem::copy_options::overwrite_existing);
      }
    }
    return alone;
  }

  // The scheduled set with `flags`: every finished image against its lone
  // run; the cancelled prompt has no image and says why.
  static void ExpectSetMatchesAlone(const std::string& model, const std::string& name, const std::string& alone,
                                    std::vector<std::string> flags, double latent_scale = 1.0,
                                    const std::string& schedule = kSchedule) {
    for (const std::string& p : kPrompts) flags.push_back("--prompt=" + p);
    flags.push_back(absl::StrCat("--join_schedule=", schedule));
    flags.push_back("--num_inference_steps=4");
    const std::string output = Run(model, name, flags);
    // The memberships the schedule names, as the set reports them.
    EXPECT_NE(output.find("image 2 step 1/3 (set of 4)"), std::string::npos) << output;
    EXPECT_NE(output.find("image 1 step 6/6 (set of 1)"), std::string::npos) << output;
    EXPECT_NE(output.find("image-003: CANCELLED: stopped after step 3 of 5"), std::string::npos) << output;
    EXPECT_FALSE(std::filesystem::exists(Path(name) + "/image-003.png"));
    testing::ExpectSerialResult(name, Path(name), Path(alone), kFinished, latent_scale);
  }

  static std::string* root_;
};
std::string* ContinuousBatching::root_ = nullptr;

const std::vector<std::string> kFluxFlags = {"--max_sequence_length=12"};
const std::vector<std::string> kFluxCfgFlags = {"--max_sequence_length=12", "--negative_prompt=a blurry picture",
                                                "--true_cfg_scale=3"};

std::vector<std::string> With(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST_F(ContinuousBatching, FluxMatchesAloneSerialUlyssesAndDataParallel) {
  MakeModel("flux", {"--preset=tiny"});
  const std::string alone = RunAlone("flux", "flux", kFluxFlags);
  ExpectSetMatchesAlone("flux", "flux_set", alone, kFluxFlags);
  ExpectSetMatchesAlone("flux", "flux_set_u2", alone, With(kFluxFlags, {"--nproc=2", "--ulysses_degree=2"}));
  ExpectSetMatchesAlone("flux", "flux_set_dp2", alone, With(kFluxFlags, {"--nproc=2", "--data_parallel_degree=2"}));
}

// True CFG: cond and uncond rows stay paired in one batch, or split over
// the CFG group.
TEST_F(ContinuousBatching, FluxWithCfgMatchesAloneInOneBatchAndCfgParallel) {
  MakeModel("flux_cfg", {"--preset=tiny"});
  const std::string alone = RunAlone("flux_cfg", "flux_cfg", kFluxCfgFlags);
  ExpectSetMatchesAlone("flux_cfg", "flux_cfg_set", alone, kFluxCfgFlags);
  ExpectSetMatchesAlone("flux_cfg", "flux_cfg_set_cfg2", alone, With(kFluxCfgFlags, {"--nproc=2", "--use_cfg_parallel"}));
  ExpectSetMatchesAlone("flux_cfg", "flux_cfg_set_dp2", alone,
                        With(kFluxCfgFlags, {"--nproc=2", "--data_parallel_degree=2"}));
}

// Requests with and without CFG share the set's steps (the schedule's CFG
// field): a member without CFG has one row, one with it two, and each gets
// the image it gives alone. Flux's true CFG, and SD3.5's guidance_scale CFG
// (1: off), in one batch and under data parallel.
constexpr const char* kMixedCfgSchedule = "0:4::1,1:6,3:3::1,2:5:5";
TEST_F(ContinuousBatching, RequestsWithAndWithoutCfgShareTheSet) {
  MakeModel("flux_mixed", {"--preset=tiny"});
  const std::string flux_alone =
      RunAlone("flux_mixed", "flux_mixed", kFluxCfgFlags, {{"--true_cfg_scale=1"}, {}, {"--true_cfg_scale=1"}});
  ExpectSetMatchesAlone("flux_mixed", "flux_mixed_set", flux_alone, kFluxCfgFlags, 1.0, kMixedCfgSchedule);
  ExpectSetMatchesAlone("flux_mixed", "flux_mixed_set_dp2", flux_alone,
                        With(kFluxCfgFlags, {"--nproc=2", "--data_parallel_degree=2"}), 1.0, kMixedCfgSchedule);
  MakeModel("sd3_mixed", {"--family=sd3", "--variant=sd3.5-medium", "--preset=tiny"});
  const std::vector<std::string> sd3 = {"--height=64", "--width=64", "--max_sequence_length=12"};
  const std::string sd3_alone =
      RunAlone("sd3_mixed", "sd3_mixed", sd3, {{"--guidance_scale=1"}, {}, {"--guidance_scale=1"}});
  ExpectSetMatchesAlone("sd3_mixed", "sd3_mixed_set", sd3_alone, sd3, 1.0, kMixedCfgSchedule);
}

// SD3.5 (flow matching, CFG), PixArt-Σ (DPM-Solver++'s multistep history
// per member), HunyuanDiT (DDPM's fresh noise per member from its own
// generator; skips and cross-attention to a text re-embedded when the
// rows change).
TEST_F(ContinuousBatching, EveryFamilyMatchesAlone) {
  struct Family {
    std::string name;
    std::vector<std::string> make;
  };
  const std::vector<Family> families = {
      {"sd3", {"--family=sd3", "--variant=sd3.5-medium", "--preset=tiny"}},
      {"pixart", {"--family=pixart-sigma", "--preset=tiny"}},
      {"hunyuandit", {"--family=hunyuandit", "--preset=tiny"}},
  };
  std::map<std::string, double> scales;
  for (const Family& f : families) {
    SCOPED_TRACE(f.name);
    MakeModel(f.name, f.make);
    const std::vector<std::string> flags = {"--height=64", "--width=64"};
    const std::string alone = RunAlone(f.name, f.name, flags);
    // A random model's final latents can be far from unit size (the tiny
    // PixArt-Σ's reach ~400): the bound scales with them (see
    // ExpectSerialResult).
    scales[f.name] = std::max(1.0, testing::MaxAbsLatent(Path(alone), 1));
    std::printf("%s: largest final latent %.3g\n", f.name.c_str(), scales[f.name]);
    ExpectSetMatchesAlone(f.name, f.name + "_set", alone, flags, scales[f.name]);
  }
  // Under USP too, for a cross-attention family (its text is whole on
  // every rank).
  ExpectSetMatchesAlone("pixart", "pixart_set_u2", "pixart_alone",
                        {"--height=64", "--width=64", "--nproc=2", "--ulysses_degree=2"}, scales["pixart"]);
}

// PipeFusion: a joiner runs its warmup steps whole (one patch,
// synchronously through the stages) in the set's warmup run, then moves
// with its stale K/V to the pipelined run, so each member gets the image
// its own PipeFusion run gives alone (PipeFusion's result, not serial's).
// Members with and without CFG (the uncond rows' K/V move with them);
// warmup 0 with 4 patches (a joiner's empty K/V rows stay masked as in its
// own first step); HunyuanDiT with 2 warmup steps (long skips across the
// stages, the cross-attention text re-embedded when the rows change).
TEST_F(ContinuousBatching, PipeFusionJoinersWarmUpAndMatchAlone) {
  MakeModel("flux_pf", {"--preset=tiny"});
  const std::vector<std::string> pf = {"--nproc=2", "--pipefusion_parallel_degree=2"};
  const std::string alone = RunAlone("flux_pf", "flux_pf", With(kFluxCfgFlags, pf),
                                     {{"--true_cfg_scale=1"}, {}, {"--true_cfg_scale=1"}});
  ExpectSetMatchesAlone("flux_pf", "flux_pf_set", alone, With(kFluxCfgFlags, pf), 1.0, kMixedCfgSchedule);
  const std::vector<std::string> pf0 = With(pf, {"--warmup_steps=0", "--num_pipeline_patch=4"});
  const std::string alone0 = RunAlone("flux_pf", "flux_pf0", With(kFluxFlags, pf0));
  ExpectSetMatchesAlone("flux_pf", "flux_pf0_set", alone0, With(kFluxFlags, pf0));
  MakeModel("hunyuandit_pf", {"--family=hunyuandit", "--preset=tiny"});
  const std::vector<std::string> hy = With({"--height=64", "--width=64", "--warmup_steps=2"}, pf);
  const std::string hy_alone = RunAlone("hunyuandit_pf", "hunyuandit_pf", hy);
  const double scale = std::max(1.0, testing::MaxAbsLatent(Path(hy_alone), 1));
  ExpectSetMatchesAlone("hunyuandit_pf", "hunyuandit_pf_set", hy_alone, hy, scale);
}

// What cannot run as a set is refused before any rank starts.
TEST_F(ContinuousBatching, BadSchedulesAreRefused) {
  MakeModel("flux_bad", {"--preset=tiny"});
  const std::string model = Path("flux_bad");
  const auto run = [&](std::vector<std::string> flags) {
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + model, "--output_dir=" + Path("bad"),
                                     "--prompt=a", "--prompt=b", "--threads=1", "--device=cpu"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return RunOne(argv);
  };
  RunResult r = run({"--join_schedule=0"});
  EXPECT_FALSE(r.exit.ok());
  EXPECT_NE(r.output.find("--join_schedule has 1 entries; it needs one per prompt (2)"), std::string::npos) << r.output;
  r = run({"--join_schedule=0,1", "--use_fbcache"});
  EXPECT_FALSE(r.exit.ok());
  EXPECT_NE(r.output.find("without a step cache"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace ditserve
