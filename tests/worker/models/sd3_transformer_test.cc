#include "worker/models/sd3/sd3_transformer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/weights/load_module.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::sd3 {
namespace {

using models::DitConditioning;
using models::DitHidden;
using models::DitPart;
using models::DitPositions;
using testing::ReadTextFile;

struct Io {
  at::Tensor hidden_states, encoder_hidden_states, pooled_projections, timestep, expected;
};

// The model in pieces, stage by stage as PipeFusion runs it: each stage
// holds and loads (partially) only its blocks; the result unpacked to
// [B, out, H, W].
at::Tensor RunInParts(const Sd3TransformerConfig& c, const weights::SafetensorsCheckpoint& ckpt, const Io& in,
                      const std::vector<DitPart>& parts) {
  const int64_t B = in.hidden_states.size(0), C = c.in_channels, H = in.hidden_states.size(2),
                W = in.hidden_states.size(3), rows = H / 2, cols = W / 2, S = rows * cols;
  const at::Tensor packed =
      in.hidden_states.reshape({B, C, rows, 2, cols, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({B, S, 4 * C});
  const at::Tensor sigma = in.timestep / 1000;
  DitHidden hidden;
  at::Tensor out;
  models::SerialJointAttention attention;
  for (const DitPart& part : parts) {
    auto stage = Sd3Transformer::Create(c, at::kFloat, part, models::ParameterInit::kUninitialized);
    EXPECT_TRUE(stage.ok()) << stage.status();
    if (!stage.ok()) return {};
    weights::LoadOptions options;
    EXPECT_FALSE(weights::LoadModuleWeights((*stage)->module(), ckpt, options).ok()) << "unexpected keys";
    options.partial = true;
    const absl::Status loaded = weights::LoadModuleWeights((*stage)->module(), ckpt, options);
    EXPECT_TRUE(loaded.ok()) << loaded;
    for (const auto& p : (*stage)->module().named_parameters()) {
      if (absl::StartsWith(p.key(), "transformer_blocks.")) {
        const int index = std::stoi(p.key().substr(p.key().find('.') + 1));
        EXPECT_TRUE(index >= part.first_block && index < (*stage)->part().end_block) << p.key();
      }
      if (!part.embedders) {
        EXPECT_FALSE(absl::StartsWith(p.key(), "pos_embed.") || absl::StartsWith(p.key(), "context_embedder."))
            << p.key();
      }
      if (!part.head) {
        EXPECT_FALSE(absl::StartsWith(p.key(), "norm_out.") || absl::StartsWith(p.key(), "proj_out.")) << p.key();
      }
    }
    EXPECT_EQ((*stage)
                  ->Forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep)
                  .status()
                  .code(),
              absl::StatusCode::kFailedPrecondition);
    const at::Tensor temb = (*stage)->TimeEmbedding(sigma, at::Tensor(), in.pooled_projections);
    const DitConditioning conditioning = (*stage)->Condition(temb);
    const DitPositions positions = (*stage)->Positions(in.encoder_hidden_states.size(1), rows, cols, 0, S, at::kCPU);
    EXPECT_EQ(positions.image_embedding.defined(), part.embedders);
    if (part.embedders) hidden = (*stage)->Embed(packed, in.encoder_hidden_states, positions);
    const absl::Status ran = (*stage)->RunBlocks(hidden, conditioning, positions, attention);
    EXPECT_TRUE(ran.ok()) << ran;
    if (part.head) out = (*stage)->Head(hidden.x, conditioning);
  }
  EXPECT_FALSE(hidden.context.defined()) << "the last block ends the text stream";
  const int64_t O = c.out_channels;
  return out.reshape({B, rows, cols, O, 2, 2}).permute({0, 3, 1, 4, 2, 5}).reshape({B, O, H, W});
}

// diffusers' SD3Transformer2DModel and ours, same checkpoint, same inputs;
// then the same checkpoint run in two stages.
void CompareWithDiffusers(const std::string& variant) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/sd3_ref_", getpid(), "_", variant);
  std::filesystem::create_directories(dir);
  const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/sd3_reference.py",
                                                       dir + " " + variant, dir + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;

  auto config = ParseSd3TransformerConfig(ReadTextFile(dir + "/transformer/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->qk_norm, variant == "sd3" ? "" : "rms_norm");
  EXPECT_EQ(config->dual_attention_layers.empty(), variant != "sd3.5-medium");
  auto model = Sd3Transformer::Create(*config, at::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/transformer");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  // diffusers saves the position embedding (a persistent buffer); ours,
  // computed at Create, is the same table.
  ASSERT_TRUE(ckpt->Contains("pos_embed.pos_embed"));
  const at::Tensor saved_pos = *ckpt->Get("pos_embed.pos_embed");
  const at::Tensor computed_pos = (*model)->module().named_buffers()["pos_embed.pos_embed"];
  ASSERT_EQ(saved_pos.sizes(), computed_pos.sizes());
  EXPECT_LT((saved_pos - computed_pos).abs().max().item<double>(), 1e-6);
  const absl::Status loaded = weights::LoadModuleWeights((*model)->module(), *ckpt);
  ASSERT_TRUE(loaded.ok()) << loaded;

  auto io = weights::SafetensorsCheckpoint::Open(dir + "/io.safetensors");
  ASSERT_TRUE(io.ok()) << io.status();
  const Io in{*io->Get("hidden_states"), *io->Get("encoder_hidden_states"), *io->Get("pooled_projections"),
              *io->Get("timestep"), *io->Get("expected")};
  at::NoGradGuard no_grad;
  auto out = (*model)->Forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), in.expected.sizes());
  const double err = (*out - in.expected).abs().max().item<double>();
  const double scale = in.expected.abs().max().item<double>();
  std::printf("%s: max-abs error %.3g (output max %.3g)\n", variant.c_str(), err, scale);
  EXPECT_LT(err, 1e-4 * std::max(1.0, scale));

  const int k = 1;
  const at::Tensor parts = RunInParts(*config, *ckpt, in, {{0, k, true, false}, {k, -1, false, true}});
  ASSERT_TRUE(parts.defined());
  const double parts_err = (parts - *out).abs().max().item<double>();
  std::printf("%s: two stages vs Forward max-abs difference %.3g\n", variant.c_str(), parts_err);
  EXPECT_LT(parts_err, 1e-5 * std::max(1.0, scale));
  std::filesystem::remove_all(dir);
}

TEST(Sd3Transformer, MatchesDiffusersSd3) { CompareWithDiffusers("sd3"); }
TEST(Sd3Transformer, MatchesDiffusersSd35Large) { CompareWithDiffusers("sd3.5-large"); }
TEST(Sd3Transformer, MatchesDiffusersSd35Medium) { CompareWithDiffusers("sd3.5-medium"); }

Sd3TransformerConfig TinyConfig() {
  Sd3TransformerConfig c;
  c.sample_size = 8;
  c.in_channels = 4;
  c.out_channels = 4;
  c.num_layers = 3;
  c.attention_head_dim = 8;
  c.num_attention_heads = 2;
  c.joint_attention_dim = 12;
  c.caption_projection_dim = 16;
  c.pooled_projection_dim = 6;
  c.pos_embed_max_size = 6;
  c.dual_attention_layers = {1};
  c.qk_norm = "rms_norm";
  return c;
}

TEST(Sd3Transformer, ConfigErrors) {
  EXPECT_EQ(ParseSd3TransformerConfig("[").status().code(), absl::StatusCode::kInvalidArgument);
  const auto message = [](const std::string& json) {
    return std::string(ParseSd3TransformerConfig(json).status().message());
  };
  EXPECT_EQ(message(R"({"qk_norm": "layer_norm"})"),
            "transformer config: qk_norm \"layer_norm\" is not supported (null or \"rms_norm\")");
  EXPECT_EQ(ParseSd3TransformerConfig(R"({"qk_norm": "layer_norm"})").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(message(R"({"qk_norm": 3})"), "qk_norm"));
  EXPECT_EQ(message(R"({"patch_size": 3})"),
            "transformer config: patch_size 3 is not supported (tokens are 2x2 latent patches)");
  EXPECT_EQ(ParseSd3TransformerConfig(R"({"patch_size": 3})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(message(R"({"num_layers": 0})"),
            "transformer config: num_layers must be an integer in [1, 1048576], got 0");
  EXPECT_EQ(message(R"({"caption_projection_dim": 1536})"),
            "transformer config: caption_projection_dim 1536 must equal num_attention_heads × attention_head_dim = "
            "1152 (the text and image streams share one width)");
  EXPECT_EQ(message(R"({"num_layers": 4, "dual_attention_layers": [0, 4]})"),
            "transformer config: dual_attention_layers must be distinct block indices in [0, 4), got 4");
  EXPECT_TRUE(absl::StrContains(message(R"({"dual_attention_layers": [1, 1]})"), "dual_attention_layers"));
  EXPECT_TRUE(absl::StrContains(message(R"({"dual_attention_layers": 3})"), "dual_attention_layers"));
  EXPECT_TRUE(absl::StrContains(message(R"({"pos_embed_max_size": null})"), "pos_embed_max_size"));

  // Stable Diffusion 3.5 Medium's transformer/config.json.
  auto medium = ParseSd3TransformerConfig(
      R"({"_class_name": "SD3Transformer2DModel", "_diffusers_version": "0.31.0.dev0", "attention_head_dim": 64,
          "caption_projection_dim": 1536, "dual_attention_layers": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
          "in_channels": 16, "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 24,
          "out_channels": 16, "patch_size": 2, "pooled_projection_dim": 2048, "pos_embed_max_size": 384,
          "qk_norm": "rms_norm", "sample_size": 128})");
  ASSERT_TRUE(medium.ok()) << medium.status();
  EXPECT_EQ(medium->inner_dim(), 1536);
  EXPECT_EQ(medium->dual_attention_layers.size(), 13u);
  EXPECT_TRUE(medium->IsDualAttention(12));
  EXPECT_FALSE(medium->IsDualAttention(13));
  // Stable Diffusion 3 Medium's: qk_norm and dual_attention_layers absent.
  auto sd3 = ParseSd3TransformerConfig(
      R"({"_class_name": "SD3Transformer2DModel", "attention_head_dim": 64, "caption_projection_dim": 1536,
          "in_channels": 16, "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 24,
          "out_channels": 16, "patch_size": 2, "pooled_projection_dim": 2048, "pos_embed_max_size": 192,
          "sample_size": 128})");
  ASSERT_TRUE(sd3.ok()) << sd3.status();
  EXPECT_EQ(sd3->qk_norm, "");
  EXPECT_TRUE(sd3->dual_attention_layers.empty());

  // Create validates a config built in code too.
  Sd3TransformerConfig bad = TinyConfig();
  bad.qk_norm = "l2";
  EXPECT_EQ(Sd3Transformer::Create(bad, at::kFloat).status().message(),
            "transformer config: qk_norm \"l2\" is not supported (null or \"rms_norm\")");
  bad = TinyConfig();
  bad.patch_size = 3;
  EXPECT_EQ(Sd3Transformer::Create(bad, at::kFloat).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Sd3Transformer, PositionEmbeddingClosedForm) {
  // dim 8: per axis 2 frequencies 10000^(-j/2), j = 0, 1; sines then cosines;
  // the column first. Positions are index·base_size/grid.
  const at::Tensor e = Sd3PositionEmbedding(8, 4, 2.0);
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{16, 8}));
  const int row = 3, col = 1;
  const double prow = row * 0.5, pcol = col * 0.5;
  for (int j = 0; j < 2; ++j) {
    const double f = std::pow(10000.0, -j / 2.0);
    EXPECT_NEAR(e[row * 4 + col][j].item<float>(), std::sin(pcol * f), 1e-6);
    EXPECT_NEAR(e[row * 4 + col][2 + j].item<float>(), std::cos(pcol * f), 1e-6);
    EXPECT_NEAR(e[row * 4 + col][4 + j].item<float>(), std::sin(prow * f), 1e-6);
    EXPECT_NEAR(e[row * 4 + col][6 + j].item<float>(), std::cos(prow * f), 1e-6);
  }
}

// Positions crops the centre of the pos_embed_max_size grid and slices the
// tokens asked for.
TEST(Sd3Transformer, PositionsCropTheCentre) {
  const Sd3TransformerConfig c = TinyConfig();  // 6x6 grid
  auto model = Sd3Transformer::Create(c, at::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->max_token_rows(), 6);
  const at::Tensor full = Sd3PositionEmbedding(c.inner_dim(), 6, c.sample_size / 2).view({6, 6, -1});
  // A 3x4 grid: top (6-3)/2 = 1, left (6-4)/2 = 1.
  const DitPositions all = (*model)->Positions(5, 3, 4, 0, 12, at::kCPU);
  ASSERT_EQ(all.image_embedding.sizes(), (std::vector<int64_t>{12, c.inner_dim()}));
  EXPECT_TRUE(at::equal(all.image_embedding, full.narrow(0, 1, 3).narrow(1, 1, 4).reshape({12, -1})));
  EXPECT_FALSE(all.text_cos.defined());
  const DitPositions some = (*model)->Positions(0, 3, 4, 5, 9, at::kCPU);
  EXPECT_TRUE(at::equal(some.image_embedding, all.image_embedding.narrow(0, 5, 4)));
  // The whole grid.
  EXPECT_TRUE(at::equal((*model)->Positions(0, 6, 6, 0, 36, at::kCPU).image_embedding, full.reshape({36, -1})));
  // A part without the embedders has no table (nothing reads it).
  auto tail = Sd3Transformer::Create(c, at::kFloat, {1, -1, false, true});
  ASSERT_TRUE(tail.ok());
  EXPECT_FALSE((*tail)->Positions(5, 3, 4, 0, 12, at::kCPU).image_embedding.defined());
}

struct TinyInputs {
  at::Tensor hidden_states, encoder_hidden_states, pooled_projections, timestep;
};

TinyInputs MakeInputs(const Sd3TransformerConfig& c, int64_t B, int64_t H, int64_t W, int64_t T) {
  at::manual_seed(7);
  return {at::randn({B, c.in_channels, H, W}), at::randn({B, T, c.joint_attention_dim}),
          at::randn({B, c.pooled_projection_dim}), at::rand({B}) * 1000};
}

TEST(Sd3Transformer, RejectsBadInputs) {
  const Sd3TransformerConfig c = TinyConfig();
  auto model = Sd3Transformer::Create(c, at::kFloat);
  ASSERT_TRUE(model.ok());
  const TinyInputs in = MakeInputs(c, 1, 4, 6, 3);
  const auto forward = [&](const at::Tensor& x, const at::Tensor& text, const at::Tensor& pooled,
                           const at::Tensor& t) { return (*model)->Forward(x, text, pooled, t).status(); };
  at::NoGradGuard no_grad;
  EXPECT_TRUE(forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep).ok());
  EXPECT_EQ(forward(at::zeros({1, 4, 5, 6}), in.encoder_hidden_states, in.pooled_projections, in.timestep).message(),
            "sd3: hidden_states must be [B, 4, H, W] with H and W even");
  EXPECT_EQ(forward(at::zeros({1, 3, 4, 6}), in.encoder_hidden_states, in.pooled_projections, in.timestep).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(forward(at::zeros({1, 4, 4, 14}), in.encoder_hidden_states, in.pooled_projections, in.timestep).message(),
            "sd3: a 4x14 latent is 2x7 tokens; the position embedding covers at most 6 per side (pos_embed_max_size)");
  EXPECT_TRUE(forward(at::zeros({1, 4, 12, 12}), in.encoder_hidden_states, in.pooled_projections, in.timestep).ok());
  EXPECT_EQ(forward(in.hidden_states, at::zeros({1, 3, 13}), in.pooled_projections, in.timestep).message(),
            "sd3: encoder_hidden_states must be [1, T, 12]");
  EXPECT_EQ(forward(in.hidden_states, in.encoder_hidden_states, at::zeros({1, 7}), in.timestep).message(),
            "sd3: pooled_projections must be [1, 6]");
  EXPECT_EQ(forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, at::zeros({2})).message(),
            "sd3: timestep must hold 1 values");
}

// Seeded random weights, N(0, 0.3) (large enough that every block matters).
void RandomiseParameters(Sd3Transformer& model) {
  at::NoGradGuard no_grad;
  at::manual_seed(11);
  for (auto& p : model.module().named_parameters()) p.value().normal_(0, 0.3);
}

// TimeEmbedding(sigma) is the timestep embedding of sigma·1000, and the
// pieces over sliced tokens (an image split in patches that each carry the
// text, one model) compose to Forward.
TEST(Sd3Transformer, PiecesMatchForward) {
  const Sd3TransformerConfig c = TinyConfig();
  auto model = Sd3Transformer::Create(c, at::kFloat);
  ASSERT_TRUE(model.ok());
  RandomiseParameters(**model);
  const TinyInputs in = MakeInputs(c, 2, 8, 6, 5);
  at::NoGradGuard no_grad;
  const at::Tensor sigma = at::tensor({0.25f, 0.875f});
  EXPECT_TRUE(at::allclose((*model)->TimeEmbedding(sigma, at::Tensor(), in.pooled_projections),
                           (*model)->TimestepEmbedding(at::tensor({250.f, 875.f}), in.pooled_projections)));
  auto want = (*model)->Forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, sigma * 1000);
  ASSERT_TRUE(want.ok()) << want.status();

  const int64_t rows = 4, cols = 3, S = 12;
  const at::Tensor packed = in.hidden_states.reshape({2, 4, rows, 2, cols, 2}).permute({0, 2, 4, 1, 3, 5}).reshape(
      {2, S, 16});
  const DitConditioning cond = (*model)->Condition((*model)->TimeEmbedding(sigma, at::Tensor(), in.pooled_projections));
  ASSERT_EQ(cond.blocks.size(), 3u);
  EXPECT_EQ(cond.blocks[0].size(1), 6 * 16);
  EXPECT_EQ(cond.blocks[1].size(1), 9 * 16);  // dual attention
  EXPECT_EQ(cond.blocks_context[2].size(1), 2 * 16);  // the last block's AdaLayerNormContinuous
  EXPECT_EQ(cond.head.size(1), 2 * 16);
  // Embed is per token: two halves embedded apart equal the whole.
  const DitHidden whole = (*model)->Embed(packed, in.encoder_hidden_states,
                                          (*model)->Positions(5, rows, cols, 0, S, at::kCPU));
  const DitHidden second = (*model)->Embed(packed.narrow(1, 6, 6), at::Tensor(),
                                           (*model)->Positions(0, rows, cols, 6, S, at::kCPU));
  EXPECT_FALSE(second.context.defined());
  EXPECT_TRUE(at::allclose(second.x, whole.x.narrow(1, 6, 6)));
  DitHidden hidden = whole;
  models::SerialJointAttention attention;
  ASSERT_TRUE((*model)->RunBlocks(hidden, cond, {}, attention).ok());
  EXPECT_FALSE(hidden.context.defined());
  const at::Tensor got =
      (*model)->Head(hidden.x, cond).reshape({2, rows, cols, 4, 2, 2}).permute({0, 3, 1, 4, 2, 5}).reshape(
          {2, 4, 8, 6});
  EXPECT_LT((got - *want).abs().max().item<double>(), 1e-5);
}

// A part's RunBlocks refuses another part's conditioning.
TEST(Sd3Transformer, RefusesForeignConditioning) {
  const Sd3TransformerConfig c = TinyConfig();
  auto whole = Sd3Transformer::Create(c, at::kFloat);
  auto stage = Sd3Transformer::Create(c, at::kFloat, {1, 2, false, false});
  ASSERT_TRUE(whole.ok() && stage.ok());
  const TinyInputs in = MakeInputs(c, 1, 4, 4, 2);
  at::NoGradGuard no_grad;
  const at::Tensor temb = (*whole)->TimeEmbedding(in.timestep / 1000, at::Tensor(), in.pooled_projections);
  DitHidden hidden{at::zeros({1, 2, 16}), at::zeros({1, 4, 16})};
  models::SerialJointAttention attention;
  const absl::Status wrong = (*stage)->RunBlocks(hidden, (*whole)->Condition(temb), {}, attention);
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument) << wrong;
  EXPECT_TRUE(absl::StrContains(wrong.message(), "this part holds 1")) << wrong;
  EXPECT_TRUE((*stage)->RunBlocks(hidden, (*stage)->Condition(temb), {}, attention).ok());
}

// Under autograd the model builds a graph and computes the inference
// values. Every weight gets a gradient except the last block's text-query
// path: its text outputs are dropped (context_pre_only), so add_q_proj and
// norm_added_q there do not reach the output, in diffusers as here.
TEST(Sd3Transformer, DifferentiableUnderGradMode) {
  const Sd3TransformerConfig c = TinyConfig();
  auto model = Sd3Transformer::Create(c, at::kFloat);
  ASSERT_TRUE(model.ok());
  RandomiseParameters(**model);
  const TinyInputs in = MakeInputs(c, 1, 4, 6, 3);
  at::Tensor inference;
  {
    at::NoGradGuard no_grad;
    inference = *(*model)->Forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep);
  }
  auto out = (*model)->Forward(in.hidden_states, in.encoder_hidden_states, in.pooled_projections, in.timestep);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->requires_grad());
  EXPECT_LT((*out - inference).abs().max().item<double>(), 1e-5);
  out->pow(2).mean().backward();
  std::set<std::string> without;
  for (const auto& p : (*model)->module().named_parameters()) {
    if (!p.value().grad().defined() || p.value().grad().abs().sum().item<double>() == 0) without.insert(p.key());
  }
  EXPECT_EQ(without, (std::set<std::string>{"transformer_blocks.2.attn.add_q_proj.bias",
                                            "transformer_blocks.2.attn.add_q_proj.weight",
                                            "transformer_blocks.2.attn.norm_added_q.weight"}));
}

TEST(Sd3Transformer, PartOutOfRange) {
  EXPECT_EQ(Sd3Transformer::Create(TinyConfig(), at::kFloat, {2, 5, false, true}).status().message(),
            "sd3: blocks [2, 5) are outside the model's 3 blocks");
}

}  // namespace
}  // namespace ditserve::worker::sd3
