// End-to-end tests of parallel generation: `ditserve-run` with xDiT's
// flags on a tiny model made by ditserve-make-model, every result checked
// against the serial run (a world of one) of the same prompts and seeds.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "util/free_port.h"
#include "tests/harness/generation_outputs.h"

namespace ditserve {
namespace {

using testing::BinDir;
using testing::Comparison;
using testing::ReadPng;
using testing::RgbImage;
using testing::ReadTextFile;
using testing::RunOne;
using testing::RunResult;

constexpr int kSteps = 4;
// The tiny model's (random weights) tiled decode against its whole decode,
// tiles of 64 px (8 latent rows) at 256 px: measured 23.1 dB
// (docs/benchmarks.md has the trained demo model's: 33.8 dB with its
// sample_size, 128-px tiles, at 256 px).
constexpr double kTiledPsnrBound = 20;

class ParallelGeneration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(absl::StrCat(::testing::TempDir(), "/parallel_generation_", getpid()));
    std::filesystem::create_directories(*root_);
    const RunResult made = RunOne({BinDir() + "/ditserve-make-model", "--preset=tiny", "--out=" + Model()});
    ASSERT_TRUE(made.exit.ok()) << made.output;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*root_);
    delete root_;
  }
  static std::string Model() { return *root_ + "/model"; }

  // ditserve-run with `flags` (plus the common ones) into a fresh directory.
  static std::string Run(const std::string& name, std::vector<std::string> flags, bool expect_ok = true) {
    const std::string out = *root_ + "/" + name;
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model(), "--output_dir=" + out,
                                     "--save_latents", absl::StrCat("--num_inference_steps=", kSteps),
                                     "--seed=7", "--threads=1", "--device=cpu"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const RunResult r = RunOne(argv);
    if (expect_ok) {
      EXPECT_TRUE(r.exit.ok()) << absl::StrJoin(argv, " ") << "\n" << r.output;
    }
    last_output_ = r.output;
    return out;
  }
  static std::string* root_;
  static std::string last_output_;
};
std::string* ParallelGeneration::root_ = nullptr;
std::string ParallelGeneration::last_output_;

struct Case {
  std::string name;
  std::vector<std::string> degrees;
  int prompts = 1;
  bool true_cfg = false;
  int text_tokens = 12;
  int height = 0;  // 0: the model's default
};

std::vector<std::string> JobFlags(const Case& c) {
  std::vector<std::string> f = {absl::StrCat("--max_sequence_length=", c.text_tokens)};
  const char* prompts[] = {"a red circle on a blue background", "a green square on a white background",
                           "a yellow triangle on a black background"};
  for (int i = 0; i < c.prompts; ++i) f.push_back(absl::StrCat("--prompt=", prompts[i]));
  if (c.height > 0) f.push_back(absl::StrCat("--height=", c.height));
  if (c.true_cfg) {
    f.push_back("--negative_prompt=a blurry picture");
    f.push_back("--true_cfg_scale=3");
  }
  return f;
}

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Without PipeFusion every method computes the serial result up to float
// rounding: latents within 1e-4 (seen: ~2e-7). The images are the serial
// images except for uint8 values that a rounding difference of ~1e-7 moves
// across a .5 boundary: at most 1 apart, at most 0.05% of the values
// (seen: 0–3 of 49,152).
TEST_F(ParallelGeneration, MatchesSerial) {
  const std::vector<Case> cases = {
      {"u2", {"--nproc=2", "--ulysses_degree=2"}},
      // The ranks of one machine exchange through shared memory; Gloo (the
      // path between machines) gives the same result.
      {"u2_gloo", {"--nproc=2", "--ulysses_degree=2", "--shared_memory_transport=false"}},
      {"r2", {"--nproc=2", "--ring_degree=2"}, 1, false, 11},  // 11 text tokens: padded to 12
      {"u2r2", {"--nproc=4", "--ulysses_degree=2", "--ring_degree=2"}},
      {"u4", {"--nproc=4", "--ulysses_degree=4"}, 1, false, 10},
      {"r4", {"--nproc=4", "--ring_degree=4"}},
      {"cfg2", {"--nproc=2", "--use_cfg_parallel"}, 1, true},
      {"cfg2u2", {"--nproc=4", "--use_cfg_parallel", "--ulysses_degree=2"}, 1, true},
      {"dp2", {"--nproc=2", "--data_parallel_degree=2"}, 2},
      {"dp2_uneven", {"--nproc=2", "--data_parallel_degree=2"}, 3},
      {"dp2cfg2u2", {"--nproc=8", "--data_parallel_degree=2", "--use_cfg_parallel", "--ulysses_degree=2"}, 2, true},
      // PipeFusion with every step a warmup step runs the full image
      // through the stages: exact too.
      {"pf2_sync", {"--nproc=2", "--pipefusion_parallel_degree=2", absl::StrCat("--warmup_steps=", kSteps)}},
      {"pf4_sync", {"--nproc=4", "--pipefusion_parallel_degree=4", absl::StrCat("--warmup_steps=", kSteps)}},
      {"pf2u2_sync",
       {"--nproc=4", "--pipefusion_parallel_degree=2", "--ulysses_degree=2", absl::StrCat("--warmup_steps=", kSteps)}},
      // Token rows that do not divide by SP are padded and masked: 3 rows
      // over 2 ranks; over 4 (one rank holds padding only); 5 rows in
      // PipeFusion bands of 2 (the last band half padding).
      {"u2_pad", {"--nproc=2", "--ulysses_degree=2"}, 1, false, 12, 48},
      {"u2r2_pad", {"--nproc=4", "--ulysses_degree=2", "--ring_degree=2"}, 1, false, 12, 48},
      {"pf2r2_sync_pad",
       {"--nproc=4", "--pipefusion_parallel_degree=2", "--ring_degree=2", absl::StrCat("--warmup_steps=", kSteps)},
       1, false, 12, 80},
  };
  std::map<std::string, std::string> serial;  // job flags -> serial output dir
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string key = absl::StrJoin(job, " ");
    if (!serial.count(key)) serial[key] = Run(absl::StrCat("serial_", serial.size()), Concat({"--nproc=1"}, job));
    const std::string dir = Run(c.name, Concat(c.degrees, job));
    testing::ExpectSerialResult(c.name, dir, serial[key], c.prompts);
  }
}

// PipeFusion after warmup attends one-step-stale K/V of the other patches:
// not the serial result, but close to it.
TEST_F(ParallelGeneration, PipeFusionStaysCloseToSerial) {
  const std::vector<Case> cases = {
      {"pf2", {"--nproc=2", "--pipefusion_parallel_degree=2"}},
      {"pf4", {"--nproc=4", "--pipefusion_parallel_degree=4"}},
      {"pf2_warmup0", {"--nproc=2", "--pipefusion_parallel_degree=2", "--warmup_steps=0"}},
      {"pf2_patch4", {"--nproc=2", "--pipefusion_parallel_degree=2", "--num_pipeline_patch=4"}},
      {"pf2u2", {"--nproc=4", "--pipefusion_parallel_degree=2", "--ulysses_degree=2"}},
      {"cfg2pf2", {"--nproc=4", "--use_cfg_parallel", "--pipefusion_parallel_degree=2"}, 1, true},
      {"cfg2pf2r2", {"--nproc=8", "--use_cfg_parallel", "--pipefusion_parallel_degree=2", "--ring_degree=2"}, 1, true},
      {"pf2_layers", {"--nproc=2", "--pipefusion_parallel_degree=2", "--attn_layer_num_for_pp=1,3"}},
      {"pf2u2_pad", {"--nproc=4", "--pipefusion_parallel_degree=2", "--ulysses_degree=2"}, 1, false, 12, 80},
  };
  std::map<std::string, std::string> serial;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string key = absl::StrJoin(job, " ");
    if (!serial.count(key)) serial[key] = Run(absl::StrCat("pserial_", serial.size()), Concat({"--nproc=1"}, job));
    const std::string dir = Run(c.name, Concat(c.degrees, job));
    const Comparison cmp = testing::CompareRuns(dir, serial[key], 0);
    std::printf("%-12s latents max-abs %.3g, image PSNR %.1f dB against serial\n", c.name.c_str(), cmp.latent_max_abs,
                cmp.psnr);
    // Sanity bound: the result is the same picture (random weights change
    // little between steps, so the stale K/V cost little here; the trained
    // demo model gives the meaningful numbers, see docs/benchmarks.md).
    EXPECT_LT(cmp.latent_max_abs, 0.05);
    EXPECT_GT(cmp.psnr, 30);
  }
}

// The largest VAE activation each rank reports ("rank N vae peak activation
// B bytes"), by rank.
std::map<int, int64_t> VaePeaks(const std::string& output) {
  std::map<int, int64_t> peaks;
  for (absl::string_view line : absl::StrSplit(output, '\n')) {
    const size_t at = line.find("rank ");
    if (at == absl::string_view::npos || line.find(" vae peak activation ") == absl::string_view::npos) continue;
    const std::vector<absl::string_view> words = absl::StrSplit(line.substr(at), ' ');
    int rank = 0;
    int64_t bytes = 0;
    if (words.size() > 5 && absl::SimpleAtoi(words[1], &rank) && absl::SimpleAtoi(words[5], &bytes)) {
      peaks[rank] = bytes;
    }
  }
  return peaks;
}

// --use_parallel_vae decodes the same latents to the image rank 0 alone
// decodes (exact to float rounding, not an approximation), whatever the DiT's
// parallel method, and each rank's largest activation is about 1/N of the
// one-rank decode's. 128 px: 16 latent rows, 3 ranks get 6, 5 and 5.
TEST_F(ParallelGeneration, ParallelVaeDecodesTheSameImage) {
  const std::vector<Case> cases = {
      {"u2", {"--nproc=2", "--ulysses_degree=2"}},
      {"dp2", {"--nproc=2", "--data_parallel_degree=2"}, 3},
      {"pf2_sync", {"--nproc=2", "--pipefusion_parallel_degree=2", absl::StrCat("--warmup_steps=", kSteps)}},
      {"cfg2u2", {"--nproc=4", "--use_cfg_parallel", "--ulysses_degree=2"}, 1, true},
      {"dp3", {"--nproc=3", "--data_parallel_degree=3"}, 1},                    // 6, 5 and 5 rows
      {"u2_80px", {"--nproc=2", "--ulysses_degree=2"}, 1, false, 12, 80},  // 10 × 16 latents: 5 rows each
  };
  const std::string serial = Run("vae_serial", Concat({"--nproc=1"}, JobFlags(Case{})));
  const std::map<int, int64_t> serial_peak = VaePeaks(last_output_);
  ASSERT_EQ(serial_peak.size(), 1u) << last_output_;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<std::string> job = JobFlags(c);
    const std::string whole = Run(c.name + "_whole_vae", Concat(c.degrees, job));
    const std::string banded = Run(c.name + "_parallel_vae", Concat(Concat(c.degrees, job), {"--use_parallel_vae"}));
    const std::map<int, int64_t> peaks = VaePeaks(last_output_);
    int ranks = 0;
    ASSERT_TRUE(absl::SimpleAtoi(c.degrees[0].substr(std::string("--nproc=").size()), &ranks));
    EXPECT_EQ(static_cast<int>(peaks.size()), ranks) << last_output_;
    for (int i = 0; i < c.prompts; ++i) {
      const std::string stem = absl::StrCat("/image-00", i);
      EXPECT_EQ(ReadTextFile(banded + stem + ".latents.safetensors"), ReadTextFile(whole + stem + ".latents.safetensors"));
      // The decode in bands is the whole decode to float rounding (≤ 1e-4,
      // tests/worker/pipelines/parallel_vae_test). LibTorch's CPU GEMMs
      // (the attention's, the convolutions') round differently for other
      // shapes and buffer alignments, so a value within ~1e-4 of a .5
      // boundary can land one uint8 level apart: seen 0–2 of 49,152 values.
      const Comparison cmp = testing::CompareRuns(banded, whole, i);
      std::printf("%-8s image %d: %d uint8 values differ from the whole decode\n", c.name.c_str(), i,
                  cmp.differing_values);
      EXPECT_LE(cmp.max_value_diff, 1) << "image " << i;
      EXPECT_LE(cmp.differing_values, 25) << "image " << i;
    }
    if (c.height == 0) {
      for (const auto& [rank, bytes] : peaks) {
        std::printf("%-8s rank %d: vae peak %lld bytes, %.2f of the one-rank decode's\n", c.name.c_str(), rank,
                    static_cast<long long>(bytes), static_cast<double>(bytes) / serial_peak.begin()->second);
        // A band of ceil(16 / N) rows plus two halo rows, against 16 rows.
        EXPECT_LE(bytes, serial_peak.begin()->second * (16 / ranks + 1 + 2) / 16) << rank;
      }
    }
  }
}

// --vae_tiling under --vae_memory_cap_mb: at 256 px the tiny model's whole
// decode holds an 8 × (256 + 2) × 256 float map (2 MiB), over a 1 MiB cap, so the
// request fails before any step; tiles of 64 px hold at most the joined
// image (768 KiB) and decode it, close to the whole decode.
TEST_F(ParallelGeneration, VaeTilingFitsUnderAMemoryCap) {
  const std::vector<std::string> job = {"--nproc=1", "--max_sequence_length=12", "--prompt=a red circle",
                                        "--height=256", "--width=256"};
  const std::string whole = Run("tiles_whole", job);
  EXPECT_EQ(VaePeaks(last_output_)[0], 8 * (256 + 2) * 256 * 4) << last_output_;  // with the padding rows
  Run("tiles_capped", Concat(job, {"--vae_memory_cap_mb=1"}), /*expect_ok=*/false);
  EXPECT_NE(last_output_.find("height 256 × width 256: the VAE decode's largest activation would be 2.0 MiB on a "
                              "rank, over --vae_memory_cap_mb=1 (--vae_tiling, or --use_parallel_vae on more ranks, "
                              "lowers it)"),
            std::string::npos)
      << last_output_;
  EXPECT_EQ(last_output_.find("step 1/"), std::string::npos) << "no step runs for a request that cannot decode";
  const std::string tiled =
      Run("tiles_tiled", Concat(job, {"--vae_memory_cap_mb=1", "--vae_tiling", "--vae_tile_size=64"}));
  const int64_t peak = VaePeaks(last_output_)[0];
  EXPECT_EQ(peak, 3 * 256 * 256 * 4) << last_output_;
  EXPECT_LE(peak, 1 << 20);
  EXPECT_EQ(ReadTextFile(tiled + "/image-000.latents.safetensors"), ReadTextFile(whole + "/image-000.latents.safetensors"));
  const Comparison cmp = testing::CompareRuns(tiled, whole, 0);
  std::printf("tiles of 64 px against the whole decode: PSNR %.1f dB, max difference %d\n", cmp.psnr,
              cmp.max_value_diff);
  EXPECT_GT(cmp.psnr, kTiledPsnrBound);
  EXPECT_GT(cmp.differing_values, 0) << "tiling is an approximation: the test would not see a tiled decode";
  // Bad tile sizes and combinations fail with the flag's name.
  Run("tiles_bad", Concat(job, {"--vae_tiling", "--vae_tile_size=48"}), false);
  EXPECT_NE(last_output_.find("--vae_tile_size must be a multiple of 32 pixels"), std::string::npos) << last_output_;
  Run("tiles_both", Concat(job, {"--vae_tiling", "--use_parallel_vae"}), false);
  EXPECT_NE(last_output_.find("--use_parallel_vae and --vae_tiling exclude each other"), std::string::npos)
      << last_output_;
}

// A world of one is the single-process pipeline: ditserve-generate's image
// byte for byte.
TEST_F(ParallelGeneration, WorldOfOneIsDitserveGenerate) {
  const std::string dir = Run("one", {"--nproc=1", "--max_sequence_length=12", "--prompt=a red circle"});
  const std::string png = *root_ + "/generate.png";
  const RunResult r = RunOne({BinDir() + "/ditserve-generate", "--model=" + Model(), "--prompt=a red circle",
                              "--max_sequence_length=12", absl::StrCat("--num_inference_steps=", kSteps), "--seed=7",
                              "--output=" + png});
  ASSERT_TRUE(r.exit.ok()) << r.output;
  EXPECT_EQ(ReadTextFile(dir + "/image-000.png"), ReadTextFile(png));
}

// With default flags on the trained demo model (tokenizer_2 says 32 T5
// tokens, not FLUX.1's 512) the gang and ditserve-generate agree too: the
// default max_sequence_length is the model's own in both.
TEST_F(ParallelGeneration, DefaultsFollowTheModelLikeDitserveGenerate) {
  const char* src = std::getenv("DITSERVE_SOURCE_DIR");
  const std::string model = std::string(src != nullptr ? src : ".") + "/models/flux-shapes";
  const std::string out = *root_ + "/shapes";
  const RunResult run = RunOne({BinDir() + "/ditserve-run", "--nproc=2", "--ulysses_degree=2", "--model=" + model,
                                "--prompt=a red circle on a blue background", "--height=64", "--width=64",
                                "--num_inference_steps=4", "--seed=3", "--threads=1", "--device=cpu",
                                "--output_dir=" + out});
  ASSERT_TRUE(run.exit.ok()) << run.output;
  const std::string png = *root_ + "/shapes-generate.png";
  const RunResult gen = RunOne({BinDir() + "/ditserve-generate", "--model=" + model,
                                "--prompt=a red circle on a blue background", "--height=64", "--width=64",
                                "--num_inference_steps=4", "--seed=3", "--output=" + png});
  ASSERT_TRUE(gen.exit.ok()) << gen.output;
  // Ulysses 2 against one process: equal up to the rare 1-value rounding
  // difference (see MatchesSerial); a 512-token default would differ wholesale.
  const RgbImage x = ReadPng(out + "/image-000.png"), y = ReadPng(png);
  ASSERT_FALSE(x.rgb.empty());
  ASSERT_EQ(x.rgb.size(), y.rgb.size());
  int differing = 0, max_diff = 0;
  for (size_t i = 0; i < x.rgb.size(); ++i) {
    const int d = std::abs(static_cast<int>(x.rgb[i]) - static_cast<int>(y.rgb[i]));
    differing += d != 0;
    max_diff = std::max(max_diff, d);
  }
  EXPECT_LE(max_diff, 1);
  EXPECT_LE(differing, 25);
}

// --profile_dir: every rank writes a Chrome trace of its generation.
TEST_F(ParallelGeneration, ProfileDirHoldsATracePerRank) {
  const std::string traces = *root_ + "/traces";
  const std::string out = Run("profiled", Concat({"--nproc=2", "--ring_degree=2", "--profile_dir=" + traces},
                                                 JobFlags(Case{"ring2", {}})));
  EXPECT_TRUE(std::filesystem::exists(out + "/image-000.png"));
  for (int rank = 0; rank < 2; ++rank) {
    const std::string path = absl::StrCat(traces, "/rank-", rank, ".trace.json");
    EXPECT_NE(last_output_.find(absl::StrCat("rank ", rank, " wrote the trace ", path)), std::string::npos)
        << last_output_;
    const std::string json = ReadTextFile(path);
    EXPECT_NE(json.find("\"traceEvents\""), std::string::npos) << path;
    EXPECT_NE(json.find("aten::linear"), std::string::npos) << path;
  }
}

// Two "machines" (two ditserve-run, one rank each) joined by
// --nnodes/--node_rank/--master_addr/--master_port: node 0 writes the image.
TEST_F(ParallelGeneration, MultiNodeGang) {
  const std::string serial = Run("mn_serial", {"--nproc=1", "--max_sequence_length=12", "--prompt=a red circle"});
  const auto results = testing::RunAllOnAFreePort([&](int port) {
    std::vector<std::vector<std::string>> nodes;
    for (int node = 0; node < 2; ++node) {
      nodes.push_back({BinDir() + "/ditserve-run", "--nproc=1", "--nnodes=2", absl::StrCat("--node_rank=", node),
                       "--master_addr=127.0.0.1", absl::StrCat("--master_port=", port), "--ring_degree=2",
                       "--model=" + Model(), "--output_dir=" + *root_ + "/mn", "--save_latents",
                       "--max_sequence_length=12", "--prompt=a red circle",
                       absl::StrCat("--num_inference_steps=", kSteps), "--seed=7", "--threads=1", "--device=cpu"});
    }
    return nodes;
  });
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) ASSERT_TRUE(r.exit.ok()) << r.output;
  EXPECT_NE(results[0].output.find("wrote "), std::string::npos) << results[0].output;
  EXPECT_EQ(results[1].output.find("wrote "), std::string::npos) << results[1].output;
  const Comparison cmp = testing::CompareRuns(*root_ + "/mn", serial, 0);
  EXPECT_LT(cmp.latent_max_abs, 1e-4);
  EXPECT_LE(cmp.max_value_diff, 1);
}

// Ranks derive every tensor's shape themselves and generation's data-plane
// collectives do not check shapes, so two "machines" started with
// different flags must fail on the per-call geometry agreement, with a
// message, not exchange tensors of different sizes.
TEST_F(ParallelGeneration, NodesThatDisagreeFailWithAClearMessage) {
  const auto results = testing::RunAllOnAFreePort([&](int port) {
    std::vector<std::vector<std::string>> nodes;
    for (int node = 0; node < 2; ++node) {
      nodes.push_back({BinDir() + "/ditserve-run", "--nproc=1", "--nnodes=2", absl::StrCat("--node_rank=", node),
                       "--master_addr=127.0.0.1", absl::StrCat("--master_port=", port), "--ulysses_degree=2",
                       "--model=" + Model(), "--output_dir=" + *root_ + "/disagree",
                       absl::StrCat("--max_sequence_length=", node == 0 ? 12 : 16), "--prompt=a red circle",
                       absl::StrCat("--num_inference_steps=", kSteps), "--seed=7", "--threads=1", "--device=cpu"});
    }
    return nodes;
  });
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_FALSE(r.exit.ok()) << r.output;
    EXPECT_NE(r.output.find("derives the call's geometry"), std::string::npos) << r.output;
  }
}

TEST_F(ParallelGeneration, InvalidConfigurationsFailBeforeAnyWork) {
  struct Bad {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{"--nproc=2", "--ulysses_degree=4"}, "must equal the world size 2"},
      {{"--nproc=3", "--ulysses_degree=3"}, "--ulysses_degree 3 must divide the model's 4 attention heads"},
      {{"--nproc=2", "--pipefusion_parallel_degree=2", "--num_pipeline_patch=4", "--height=48"},
       "height 48 gives 3 latent token rows: 3 bands of 1 (ulysses x ring) rows, fewer than num_pipeline_patch 4"},
      {{"--nproc=5", "--pipefusion_parallel_degree=5"},
       "--pipefusion_parallel_degree 5 is more stages than the model's 4 transformer blocks"},
      {{"--nproc=2", "--use_cfg_parallel"},
       "--use_cfg_parallel needs classifier-free guidance: true_cfg_scale > 1"},
      {{"--nproc=2", "--pipefusion_parallel_degree=2", "--attn_layer_num_for_pp=1,1"},
       "--attn_layer_num_for_pp must list 2 positive block counts"},
      {{"--nproc=1", "--height=100"}, "height must be a multiple of 16"},
      {{"--nproc=1", "--num_inference_steps=0"}, "--num_inference_steps must be in [1, 1000], got 0"},
  };
  for (const Bad& b : bad) {
    std::vector<std::string> argv = {BinDir() + "/ditserve-run", "--model=" + Model(), "--prompt=x",
                                     "--output_dir=" + *root_ + "/bad"};
    argv.insert(argv.end(), b.flags.begin(), b.flags.end());
    const RunResult r = RunOne(argv);
    EXPECT_EQ(r.exit.exit_code, 2) << absl::StrJoin(b.flags, " ") << "\n" << r.output;
    EXPECT_NE(r.output.find(b.message), std::string::npos) << r.output;
    // One line: nothing was started.
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(*root_ + "/bad"));
}

// A rank killed during generation ends the run with a one-line reason and
// leaves no process behind.
TEST_F(ParallelGeneration, DeadRankFailsTheRunWithoutOrphans) {
  const std::string log = *root_ + "/dead.log";
  const pid_t run = fork();
  ASSERT_GE(run, 0);
  if (run == 0) {
    const int fd = ::open(log.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    const std::string model = "--model=" + Model(), out = "--output_dir=" + *root_ + "/dead";
    const std::string bin = BinDir() + "/ditserve-run";
    execl(bin.c_str(), bin.c_str(), "--nproc=2", "--ulysses_degree=2", model.c_str(), out.c_str(), "--prompt=x",
          "--num_inference_steps=1000", "--max_sequence_length=8", "--threads=1", "--shutdown_grace_s=2",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait for the second step, then kill rank 1.
  std::vector<int> children;
  for (int i = 0; i < 1200 && ReadTextFile(log).find("step 2/1000") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (absl::string_view pid : absl::StrSplit(ReadTextFile(absl::StrCat("/proc/", run, "/task/", run, "/children")),
                                              ' ', absl::SkipEmpty())) {
    int p = 0;
    if (absl::SimpleAtoi(pid, &p)) children.push_back(p);
  }
  ASSERT_EQ(children.size(), 2u) << ReadTextFile(log);
  ASSERT_EQ(kill(children[1], SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(run, &status, 0), run);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string output = ReadTextFile(log);
  // Usually the killed rank is seen first; rank 0 may fail first on the
  // broken connection.
  EXPECT_TRUE(output.find("ditserve-run: rank 1 killed by signal 9 (Killed); the other ranks were stopped") != std::string::npos ||
              output.find("ditserve-run: rank 0 exited with code 1; the other ranks were stopped") != std::string::npos)
      << output;
  for (int i = 0; i < 100 && kill(children[0], 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_NE(kill(children[0], 0), 0) << "rank 0 outlived ditserve-run";
}

}  // namespace
}  // namespace ditserve
