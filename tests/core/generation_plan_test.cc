#include "core/generation_plan.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/aspect_ratio_bins.h"
#include "core/worker_options.h"

namespace ditserve::core {
namespace {

TEST(GenerationPlan, StageBlocksAreEvenAndCoverEveryBlock) {
  PipeFusionOptions pf;
  for (int blocks : {2, 4, 5, 57}) {
    for (int stages = 1; stages <= std::min(blocks, 8); ++stages) {
      int next = 0;
      for (int s = 0; s < stages; ++s) {
        const BlockRange r = StageBlocks(pf, blocks, stages, s);
        EXPECT_EQ(r.first, next);
        const int size = r.end - r.first;
        // Sizes differ by at most one, larger first.
        EXPECT_TRUE(size == blocks / stages || size == blocks / stages + 1) << blocks << " " << stages;
        if (s > 0) {
          const BlockRange previous = StageBlocks(pf, blocks, stages, s - 1);
          EXPECT_LE(size, previous.end - previous.first);
        }
        next = r.end;
      }
      EXPECT_EQ(next, blocks);
    }
  }
  EXPECT_EQ(StageBlocks(pf, 57, 4, 0).end, 15);  // FLUX.1: 19 + 38 blocks
  EXPECT_EQ(StageBlocks(pf, 57, 4, 3).first, 43);
  pf.attn_layer_num_for_pp = {1, 3};
  EXPECT_EQ(StageBlocks(pf, 4, 2, 0).end, 1);
  EXPECT_EQ(StageBlocks(pf, 4, 2, 1).first, 1);
  EXPECT_EQ(StageBlocks(pf, 4, 2, 1).end, 4);
}

// Every token belongs to exactly one (patch, SP rank), each piece is a band
// of whole rows, SP ranks of a patch get equal bands, and pieces are in row
// order: patch-major, SP rank minor.
TEST(GenerationPlan, PatchPlanPartitionsTheImage) {
  for (int rows : {8, 16, 64}) {
    for (int cols : {3, 8}) {
      for (int patches : {1, 2, 4}) {
        for (int sp : {1, 2, 4}) {
          for (int64_t text : {0, 7, 512}) {
            if (rows % sp != 0 || rows / sp < patches) continue;
            const PatchPlan plan = PatchPlan::Balanced(rows, cols, patches, sp, text);
            ASSERT_EQ(plan.patches(), patches);
            int64_t expected_begin = 0;
            for (int m = 0; m < patches; ++m) {
              const TokenRange whole = plan.Patch(m);
              EXPECT_EQ(whole.begin, expected_begin);
              EXPECT_GE(plan.rows(m), sp);
              EXPECT_EQ(plan.rows(m) % sp, 0);
              for (int s = 0; s < sp; ++s) {
                const TokenRange r = plan.Local(m, s);
                EXPECT_EQ(r.begin, expected_begin);
                EXPECT_EQ(r.size(), plan.rows(m) / sp * cols);
                EXPECT_EQ(r.begin % cols, 0);
                expected_begin = r.end;
              }
              EXPECT_EQ(whole.end, expected_begin);
            }
            EXPECT_EQ(expected_begin, static_cast<int64_t>(rows) * cols);
          }
        }
      }
    }
  }
}

// The busiest patch (text + image tokens per rank) is as light as any
// split into bands can make it: checked against every split, by brute force.
TEST(GenerationPlan, PatchPlanBalancesTextAndImageTokens) {
  for (int bands : {2, 3, 5, 8, 12}) {
    for (int patches : {2, 3, 4}) {
      if (bands < patches) continue;
      for (int64_t text : {0, 5, 16, 40, 200}) {
        const int cols = 4, sp = 2;
        const PatchPlan plan = PatchPlan::Balanced(bands * sp, cols, patches, sp, text);
        const auto cost_of = [&](const std::vector<int64_t>& b) {
          int64_t worst = 0;
          for (size_t m = 0; m < b.size(); ++m) worst = std::max(worst, (m == 0 ? text : 0) + b[m] * cols);
          return worst;
        };
        std::vector<int64_t> got;
        for (int m = 0; m < patches; ++m) got.push_back(plan.rows(m) / sp);
        // Every composition of `bands` into `patches` parts of at least 1.
        int64_t best = -1;
        std::vector<int64_t> b(patches, 1);
        const std::function<void(int, int64_t)> walk = [&](int m, int64_t left) {
          if (m == patches - 1) {
            b[m] = left;
            const int64_t c = cost_of(b);
            if (best < 0 || c < best) best = c;
            return;
          }
          for (int64_t x = 1; x <= left - (patches - 1 - m); ++x) {
            b[m] = x;
            walk(m + 1, left - x);
          }
        };
        walk(0, bands);
        EXPECT_EQ(cost_of(got), best) << "bands " << bands << " patches " << patches << " text " << text;
      }
    }
  }
  // The small preset at 512x512 (32 x 32 token rows, T5 length 512), 2
  // patches: 8 + 24 rows carry 768 tokens each. Without text: equal halves.
  const PatchPlan small = PatchPlan::Balanced(32, 32, 2, 1, 512);
  EXPECT_EQ(small.rows(0), 8);
  EXPECT_EQ(small.rows(1), 24);
  const PatchPlan even = PatchPlan::Balanced(32, 32, 4, 2, 0);
  for (int m = 0; m < 4; ++m) EXPECT_EQ(even.rows(m), 8);
  // Text longer than a fair share: patch 0 keeps one band, the rest share.
  const PatchPlan heavy = PatchPlan::Balanced(16, 8, 4, 2, 1000);
  EXPECT_EQ(heavy.rows(0), 2);
  EXPECT_EQ(heavy.rows(1) + heavy.rows(2) + heavy.rows(3), 14);
}

TEST(GenerationPlan, PaddedRowsRoundUpToTheSpDegree) {
  EXPECT_EQ(PaddedRows(64, 1), 64);
  EXPECT_EQ(PaddedRows(64, 4), 64);
  EXPECT_EQ(PaddedRows(65, 4), 68);
  EXPECT_EQ(PaddedRows(11, 2), 12);
  EXPECT_EQ(PaddedRows(3, 4), 4);
  EXPECT_EQ(PaddedRows(1, 8), 8);
}

TEST(GenerationPlan, ReplicaRequestsRoundRobin) {
  EXPECT_EQ(ReplicaRequests(5, 2, 0), (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(ReplicaRequests(5, 2, 1), (std::vector<int>{1, 3}));
  EXPECT_EQ(ReplicaRequests(1, 4, 3), (std::vector<int>{}));
  std::set<int> all;
  for (int d = 0; d < 3; ++d) {
    for (int i : ReplicaRequests(10, 3, d)) EXPECT_TRUE(all.insert(i).second);
  }
  EXPECT_EQ(all.size(), 10u);
}

TEST(GenerationPlan, ModelChecksNameTheFlag) {
  ModelGeometry m{24, 57, 16, 1024};
  parallel::ParallelConfig c;
  PipeFusionOptions pf;
  c.ulysses_degree = 5;
  EXPECT_EQ(ValidateParallelModel(c, pf, m).message(), "--ulysses_degree 5 must divide the model's 24 attention heads");
  c.ulysses_degree = 8;
  EXPECT_TRUE(ValidateParallelModel(c, pf, m).ok());
  c.ulysses_degree = 1;
  c.pipefusion_parallel_degree = 58;
  EXPECT_EQ(ValidateParallelModel(c, pf, m).message(),
            "--pipefusion_parallel_degree 58 is more stages than the model's 57 transformer blocks");
  c.pipefusion_parallel_degree = 2;
  pf.attn_layer_num_for_pp = {20, 36};
  EXPECT_EQ(ValidateParallelModel(c, pf, m).message(),
            "--attn_layer_num_for_pp must list 2 positive block counts (one per PipeFusion stage) summing to the "
            "model's 57 blocks, got [20,36]");
  pf.attn_layer_num_for_pp = {20, 37};
  EXPECT_TRUE(ValidateParallelModel(c, pf, m).ok());
  pf.warmup_steps = -1;
  EXPECT_EQ(ValidateParallelModel(c, pf, m).message(), "--warmup_steps must be in [0, 1000], got -1");
}

TEST(GenerationPlan, RequestChecksNameTheField) {
  ModelGeometry m{24, 57, 16, 1024};
  parallel::ParallelConfig c;
  PipeFusionOptions pf;
  c.ulysses_degree = 2;
  c.ring_degree = 2;
  c.pipefusion_parallel_degree = 2;  // 2 patches by default
  EXPECT_TRUE(ValidateParallelRequest(c, pf, m, 1024, 768, false).ok());  // 64 rows / 8
  // 65 rows are padded to 68: 17 bands.
  EXPECT_TRUE(ValidateParallelRequest(c, pf, m, 1040, 1024, false).ok());
  EXPECT_TRUE(ValidateParallelRequest(c, pf, m, 192, 64, false).ok());  // 12 rows: 3 bands of SP 4 rows
  pf.num_pipeline_patch = 4;
  EXPECT_EQ(ValidateParallelRequest(c, pf, m, 192, 64, false).message(),
            "height 192 gives 12 latent token rows: 3 bands of 4 (ulysses x ring) rows, fewer than num_pipeline_patch 4");
  // 13 rows pad to 16: 4 bands, the last one 3 rows of padding.
  EXPECT_TRUE(ValidateParallelRequest(c, pf, m, 208, 64, false).ok());
  pf.num_pipeline_patch = 0;
  EXPECT_EQ(ValidateParallelRequest(c, pf, m, 1000, 1024, false).message(),
            "height must be a multiple of 16 in [16, 8192], got 1000");
  c.use_cfg_parallel = true;
  EXPECT_EQ(ValidateParallelRequest(c, pf, m, 1024, 1024, false).message(),
            "--use_cfg_parallel needs classifier-free guidance: true_cfg_scale > 1");
  EXPECT_TRUE(ValidateParallelRequest(c, pf, m, 1024, 1024, true).ok());
}

TEST(GenerationPlan, ReadsTheGeometryFromTheConfigs) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/geometry_", getpid());
  std::filesystem::create_directories(dir + "/transformer");
  std::filesystem::create_directories(dir + "/vae");
  std::ofstream(dir + "/model_index.json") << R"({"_class_name": "FluxPipeline"})";
  std::ofstream(dir + "/transformer/config.json")
      << R"({"num_attention_heads": 24, "num_layers": 19, "num_single_layers": 38})";
  std::ofstream(dir + "/vae/config.json") << R"({"block_out_channels": [128, 256, 512, 512], "sample_size": 1024})";
  auto g = ReadModelGeometry(dir);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->num_attention_heads, 24);
  EXPECT_EQ(g->num_blocks, 57);
  EXPECT_EQ(g->size_multiple, 16);
  EXPECT_EQ(g->default_size, 1024);
  // The text verbatim, for the family to parse without reading it again.
  EXPECT_EQ(g->transformer_config_json, R"({"num_attention_heads": 24, "num_layers": 19, "num_single_layers": 38})");
  std::ofstream(dir + "/transformer/config.json") << R"({"num_attention_heads": 0})";
  EXPECT_EQ(ReadModelGeometry(dir).status().message(),
            dir + "/transformer/config.json: num_attention_heads must be an integer in [1, 1048576]");
  EXPECT_EQ(ReadModelGeometry(dir + "/nope").status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir + "/model_index.json") << R"({"_class_name": "SanaPipeline"})";
  EXPECT_EQ(ReadModelGeometry(dir).status().message(),
            dir + ": pipeline class SanaPipeline is not supported (supported: FluxPipeline, "
                  "StableDiffusion3Pipeline, PixArtAlphaPipeline, PixArtSigmaPipeline, HunyuanDiTPipeline)");
  // PixArt: CFG 4.5 on guidance_scale, the default size from the
  // transformer's sample_size, the T5 limit from the tokenizer.
  std::ofstream(dir + "/model_index.json") << R"({"_class_name": "PixArtSigmaPipeline"})";
  std::ofstream(dir + "/transformer/config.json")
      << R"({"num_attention_heads": 16, "num_layers": 28, "sample_size": 128})";
  std::filesystem::create_directories(dir + "/tokenizer");
  std::ofstream(dir + "/tokenizer/tokenizer_config.json") << R"({"model_max_length": 300})";
  g = ReadModelGeometry(dir);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->family, "pixart");
  EXPECT_EQ(g->num_blocks, 28);
  EXPECT_EQ(g->default_size, 1024);
  EXPECT_EQ(g->default_guidance_scale, 4.5);
  EXPECT_EQ(g->cfg_scale, CfgScaleField::kGuidanceScale);
  EXPECT_EQ(g->max_sequence_length, 300);
  EXPECT_EQ(g->max_token_rows, 0);
  EXPECT_EQ(g->aspect_ratio_bins, 128);
  // HunyuanDiT: CFG 5 on guidance_scale, the default size from the
  // transformer's sample_size, mT5's length from text_len_t5, no binning.
  std::ofstream(dir + "/model_index.json") << R"({"_class_name": "HunyuanDiTPipeline"})";
  std::ofstream(dir + "/transformer/config.json")
      << R"({"num_attention_heads": 16, "num_layers": 40, "sample_size": 128, "text_len_t5": 200})";
  g = ReadModelGeometry(dir);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->family, "hunyuandit");
  EXPECT_EQ(g->num_blocks, 40);
  EXPECT_EQ(g->default_size, 1024);
  EXPECT_EQ(g->default_guidance_scale, 5.0);
  EXPECT_EQ(g->cfg_scale, CfgScaleField::kGuidanceScale);
  EXPECT_EQ(g->max_sequence_length, 200);
  EXPECT_EQ(g->aspect_ratio_bins, 0);
  std::ofstream(dir + "/transformer/config.json")
      << R"({"num_attention_heads": 16, "num_layers": 40, "sample_size": 128, "text_len_t5": 0})";
  EXPECT_EQ(ReadModelGeometry(dir).status().message(),
            dir + "/transformer/config.json: text_len_t5 must be an integer in [1, 1048576]");
  std::ofstream(dir + "/model_index.json") << R"({"_class_name": "StableDiffusion3Pipeline"})";
  std::ofstream(dir + "/transformer/config.json")
      << R"({"num_attention_heads": 24, "num_layers": 24, "pos_embed_max_size": 192})";
  g = ReadModelGeometry(dir);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->family, "sd3");
  EXPECT_EQ(g->num_blocks, 24);
  EXPECT_EQ(g->max_token_rows, 192);
  EXPECT_EQ(g->default_guidance_scale, 7.0);
  std::filesystem::remove_all(dir);
}

TEST(GenerationPlan, GuidanceResolvesPerFamily) {
  ModelGeometry flux;
  flux.guidance_embeds = true;
  ResolvedGuidance g = ResolveGuidance(flux, -1, 1.0);  // unset guidance: 3.5 embedded, no CFG
  EXPECT_FALSE(g.cfg);
  EXPECT_TRUE(g.embedded);
  EXPECT_DOUBLE_EQ(g.embedded_scale, 3.5);
  g = ResolveGuidance(flux, 4.0, 2.5);  // true CFG even without a negative prompt
  EXPECT_TRUE(g.cfg);
  EXPECT_DOUBLE_EQ(g.cfg_scale, 2.5);
  EXPECT_DOUBLE_EQ(g.embedded_scale, 4.0);
  ModelGeometry sd3;
  sd3.default_guidance_scale = 7.0;
  sd3.cfg_scale = CfgScaleField::kGuidanceScale;
  g = ResolveGuidance(sd3, -1, 1.0);  // SD3's default CFG 7 against the empty prompt
  EXPECT_TRUE(g.cfg);
  EXPECT_DOUBLE_EQ(g.cfg_scale, 7.0);
  EXPECT_FALSE(g.embedded);
  g = ResolveGuidance(sd3, 1.0, 1.0);
  EXPECT_FALSE(g.cfg);
  sd3.max_token_rows = 8;
  parallel::ParallelConfig c;
  EXPECT_EQ(ValidateParallelRequest(c, PipeFusionOptions{}, sd3, 144, 64, true).message(),
            "height 144 gives 9 latent token rows; this model places at most 8 (128 px: transformer pos_embed_max_size)");
}

TEST(GenerationPlan, GuidanceFieldsAreCheckedPerFamily) {
  ModelGeometry flux;
  flux.family = "flux";
  ModelGeometry sd3;
  sd3.family = "sd3";
  sd3.cfg_scale = CfgScaleField::kGuidanceScale;
  EXPECT_TRUE(ValidateGuidance(flux, -1, 4.0).ok());
  EXPECT_EQ(ValidateGuidance(flux, 3.5, 0.5).message(), "true_cfg_scale must be >= 1, got 0.5");
  EXPECT_TRUE(ValidateGuidance(sd3, 7.0, 1.0).ok());
  EXPECT_TRUE(ValidateGuidance(sd3, -1, 1.0).ok());
  EXPECT_EQ(ValidateGuidance(sd3, 7.0, 2.0).message(),
            "true_cfg_scale must be 1 for sd3 (its classifier-free guidance scale is guidance_scale), got 2");
  EXPECT_EQ(ValidateGuidance(sd3, 7.0, 2.0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(GenerationPlan, RepeatedPromptsAreCollected) {
  std::vector<std::string> args = {"ditserve-run", "--nproc=2",  "--prompt", "a cat", "--prompt=a dog, sitting",
                                   "-prompt=x",    "--seed=3",   "--",       "--prompt=positional"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int argc = static_cast<int>(args.size());
  EXPECT_EQ(TakeRepeatedPrompts(argc, argv.data()), (std::vector<std::string>{"a cat", "a dog, sitting", "x"}));
  ASSERT_EQ(argc, 5);
  EXPECT_STREQ(argv[1], "--nproc=2");
  EXPECT_STREQ(argv[2], "--seed=3");
  EXPECT_STREQ(argv[3], "--");
  EXPECT_STREQ(argv[4], "--prompt=positional");
  EXPECT_EQ(argv[5], nullptr);
}

}  // namespace
}  // namespace ditserve::core

namespace ditserve::core {
namespace {

// PixArt's resolution binning: the bin of the nearest height/width ratio
// (diffusers' classify_height_width_bin, first of equals), none without a
// table for the sample size.
TEST(GenerationPlan, ResolutionBinsPickTheNearestAspectRatio) {
  ModelGeometry g;
  EXPECT_EQ(GenerationSize(g, 400, 720).height, 400);  // no bins
  g.aspect_ratio_bins = 128;  // ASPECT_RATIO_1024_BIN
  const auto size = [&](int h, int w) {
    const ImageSize s = GenerationSize(g, h, w);
    return std::pair{s.height, s.width};
  };
  EXPECT_EQ(size(1024, 1024), (std::pair{1024, 1024}));
  EXPECT_EQ(size(48, 80), (std::pair{768, 1280}));    // 0.6
  EXPECT_EQ(size(400, 720), (std::pair{768, 1344}));  // 0.556: 0.57 is nearer than 0.52
  EXPECT_EQ(size(4096, 256), (std::pair{2048, 512}));  // beyond the table: its last bin (4.0)
  g.aspect_ratio_bins = 32;  // ASPECT_RATIO_256_BIN
  EXPECT_EQ(size(512, 512), (std::pair{256, 256}));
  g.aspect_ratio_bins = 256;  // ASPECT_RATIO_2048_BIN
  EXPECT_EQ(size(1024, 1024), (std::pair{2048, 2048}));
  EXPECT_EQ(AspectRatioBins(16), nullptr);
  ASSERT_NE(AspectRatioBins(64), nullptr);
  EXPECT_EQ(AspectRatioBins(64)->size(), 33u);
  EXPECT_EQ(AspectRatioBins(256)->size(), 40u);
  // The checks run at the generation size: 48x80 passes as 768x1280.
  EXPECT_TRUE(ValidateParallelRequest({}, {}, g, 48, 80, false).ok());
}

}  // namespace
}  // namespace ditserve::core
