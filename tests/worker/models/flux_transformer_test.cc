#include "worker/models/flux/flux_transformer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/weights/load_module.h"
#include "worker/weights/safetensors.h"
#include "worker/weights/safetensors_writer.h"

namespace ditserve::worker::flux {
namespace {

using testing::ReadTextFile;

// diffusers' FluxTransformer2DModel and ours, same checkpoint, same inputs.
void CompareWithDiffusers(const std::string& variant) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/flux_ref_", getpid(), "_", variant);
  std::filesystem::create_directories(dir);
  const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/flux_reference.py",
                                                       dir + " " + variant, dir + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;

  auto config = ParseFluxTransformerConfig(ReadTextFile(dir + "/transformer/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->guidance_embeds, variant == "dev");
  auto model = FluxTransformer::Create(*config, at::kFloat);
  ASSERT_TRUE(model.ok());
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/transformer");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ASSERT_TRUE(weights::LoadModuleWeights((*model)->module(), *ckpt).ok());

  auto io = weights::SafetensorsCheckpoint::Open(dir + "/io.safetensors");
  ASSERT_TRUE(io.ok()) << io.status();
  FluxInputs in;
  in.hidden_states = *io->Get("hidden_states");
  in.encoder_hidden_states = *io->Get("encoder_hidden_states");
  in.pooled_projections = *io->Get("pooled_projections");
  in.timestep = *io->Get("timestep");
  in.img_ids = *io->Get("img_ids");
  in.txt_ids = *io->Get("txt_ids");
  if (io->Contains("guidance")) in.guidance = *io->Get("guidance");
  auto out = (*model)->Forward(in);
  ASSERT_TRUE(out.ok()) << out.status();
  const at::Tensor want = *io->Get("expected");
  ASSERT_EQ(out->sizes(), want.sizes());
  const double err = (*out - want).abs().max().item<double>();
  const double scale = want.abs().max().item<double>();
  std::printf("%s: max-abs error %.3g (output max %.3g)\n", variant.c_str(), err, scale);
  EXPECT_LT(err, 1e-4 * std::max(1.0, scale));
  std::filesystem::remove_all(dir);
}

TEST(FluxTransformer, MatchesDiffusersDev) { CompareWithDiffusers("dev"); }
TEST(FluxTransformer, MatchesDiffusersSchnell) { CompareWithDiffusers("schnell"); }

TEST(FluxTransformer, TimestepEmbeddingClosedForm) {
  const at::Tensor e = TimestepSinusoid256(at::tensor({0.f, 500.f}));
  ASSERT_EQ(e.sizes(), (std::vector<int64_t>{2, 256}));
  EXPECT_TRUE(at::allclose(e[0].narrow(0, 0, 128), at::ones({128})));   // cos(0)
  EXPECT_TRUE(at::allclose(e[0].narrow(0, 128, 128), at::zeros({128})));  // sin(0)
  for (int i : {0, 1, 17, 127}) {
    const double f = std::exp(-std::log(10000.0) * i / 128.0);
    EXPECT_NEAR(e[1][i].item<float>(), std::cos(500.0 * f), 2e-4) << i;
    EXPECT_NEAR(e[1][128 + i].item<float>(), std::sin(500.0 * f), 2e-4) << i;
  }
}

TEST(FluxTransformer, RopeClosedForm) {
  const at::Tensor ids = at::tensor({0.f, 2.f, 5.f}).view({1, 3});
  const auto [cos, sin] = FluxRope(ids, {4, 6, 6});
  ASSERT_EQ(cos.sizes(), (std::vector<int64_t>{1, 16}));
  // Axis 0 (position 0): cos 1, sin 0.
  EXPECT_TRUE(at::allclose(cos.narrow(1, 0, 4), at::ones({1, 4})));
  // Axis 2 (position 5, dim 6): pairs j = 0, 1, 2 at freq 10000^(-2j/6).
  for (int j = 0; j < 3; ++j) {
    const double angle = 5.0 / std::pow(10000.0, 2.0 * j / 6.0);
    EXPECT_NEAR(cos[0][10 + 2 * j].item<float>(), std::cos(angle), 1e-6);
    EXPECT_NEAR(cos[0][10 + 2 * j + 1].item<float>(), std::cos(angle), 1e-6);
    EXPECT_NEAR(sin[0][10 + 2 * j].item<float>(), std::sin(angle), 1e-6);
  }
}

TEST(FluxTransformer, ConfigErrors) {
  EXPECT_EQ(ParseFluxTransformerConfig("[").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseFluxTransformerConfig(R"({"attention_head_dim": 16, "axes_dims_rope": [4, 6, 4]})").status().message(),
            "transformer config: axes_dims_rope sum to 14 but attention_head_dim is 16");
  EXPECT_EQ(ParseFluxTransformerConfig(R"({"num_layers": 0})").status().message(),
            "transformer config: num_layers must be an integer in [1, 1048576], got 0");
  auto real = ParseFluxTransformerConfig(
      R"({"_class_name": "FluxTransformer2DModel", "guidance_embeds": true, "in_channels": 64, "out_channels": null,
          "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
          "joint_attention_dim": 4096, "pooled_projection_dim": 768, "axes_dims_rope": [16, 56, 56], "patch_size": 1})");
  ASSERT_TRUE(real.ok()) << real.status();
  EXPECT_EQ(real->out_channels, 64);
  EXPECT_EQ(real->inner_dim(), 3072);
}

TEST(FluxTransformer, RejectsBadInputs) {
  FluxTransformerConfig c;
  c.in_channels = 4;
  c.out_channels = 4;
  c.num_layers = 1;
  c.num_single_layers = 1;
  c.attention_head_dim = 8;
  c.num_attention_heads = 1;
  c.joint_attention_dim = 8;
  c.pooled_projection_dim = 8;
  c.axes_dims_rope = {2, 2, 4};
  auto model = FluxTransformer::Create(c, at::kFloat);
  ASSERT_TRUE(model.ok());
  FluxInputs in;
  in.hidden_states = at::zeros({1, 4, 5});
  EXPECT_EQ((*model)->Forward(in).status().message(), "flux: hidden_states must be [B, S, 4]");
  in.hidden_states = at::zeros({1, 4, 4});
  in.encoder_hidden_states = at::zeros({1, 2, 8});
  in.pooled_projections = at::zeros({1, 8});
  in.timestep = at::zeros({1});
  in.img_ids = at::zeros({4, 3});
  in.txt_ids = at::zeros({2, 3});
  in.guidance = at::ones({1});
  EXPECT_EQ((*model)->Forward(in).status().message(), "flux: this model takes no guidance value");
  in.guidance = at::Tensor();
  EXPECT_TRUE((*model)->Forward(in).ok());
}

FluxTransformerConfig TinyConfig() {
  FluxTransformerConfig c;
  c.in_channels = 8;
  c.out_channels = 8;
  c.num_layers = 2;
  c.num_single_layers = 2;
  c.attention_head_dim = 8;
  c.num_attention_heads = 2;
  c.joint_attention_dim = 12;
  c.pooled_projection_dim = 6;
  c.guidance_embeds = true;
  c.axes_dims_rope = {2, 2, 4};
  return c;
}

FluxInputs TinyInputs(const FluxTransformerConfig& c, int64_t B, int64_t S, int64_t T) {
  at::manual_seed(7);
  FluxInputs in;
  in.hidden_states = at::randn({B, S, c.in_channels});
  in.encoder_hidden_states = at::randn({B, T, c.joint_attention_dim});
  in.pooled_projections = at::randn({B, c.pooled_projection_dim});
  in.timestep = at::rand({B});
  in.guidance = at::full({B}, 3.5);
  in.img_ids = at::randint(0, 8, {S, 3}).to(at::kFloat);
  in.txt_ids = at::zeros({T, 3});
  return in;
}

// Seeded random weights, N(0, 0.3) (large enough that every block matters).
void RandomiseParameters(FluxTransformer& model) {
  at::NoGradGuard no_grad;
  at::manual_seed(11);
  for (auto& p : model.module().named_parameters()) p.value().normal_(0, 0.3);
}

// A full model with seeded random weights, saved; returns the checkpoint dir.
std::string SaveRandomModel(FluxTransformer& model, const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/", name, "_", getpid());
  std::filesystem::create_directories(dir);
  RandomiseParameters(model);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& p : model.module().named_parameters()) tensors.emplace_back(p.key(), p.value());
  EXPECT_TRUE(weights::WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  return dir;
}

// RoPE tables computed ahead (as the pipeline does once per request) give
// exactly what Forward computes itself; tables of the wrong size are refused.
TEST(FluxTransformer, PrecomputedRopeTables) {
  const FluxTransformerConfig c = TinyConfig();
  auto model = FluxTransformer::Create(c, at::kFloat);
  ASSERT_TRUE(model.ok());
  RandomiseParameters(**model);
  FluxInputs in = TinyInputs(c, 1, 6, 3);
  at::NoGradGuard no_grad;
  auto want = (*model)->Forward(in);
  ASSERT_TRUE(want.ok()) << want.status();
  in.rope = (*model)->Rope(in.txt_ids, in.img_ids, at::kCPU);
  auto got = (*model)->Forward(in);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(at::equal(*got, *want));
  // Tables of other ids change the result (they are used, not recomputed).
  FluxInputs shifted = in;
  shifted.rope = (*model)->Rope(in.txt_ids, in.img_ids + 1, at::kCPU);
  auto other = (*model)->Forward(shifted);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(at::allclose(*other, *want));
  in.rope.text_cos = in.rope.text_cos.narrow(0, 0, 2);
  EXPECT_EQ((*model)->Forward(in).status().message(),
            "flux: rope tables must be [6, 8] (image) and [3, 8] (text)");
}

// Stages that each hold and load only their blocks, chained through the
// piece API, give the whole model's Forward.
TEST(FluxTransformer, PartsComposeToTheWholeModel) {
  const FluxTransformerConfig c = TinyConfig();
  auto whole = FluxTransformer::Create(c, at::kFloat);
  ASSERT_TRUE(whole.ok());
  const std::string dir = SaveRandomModel(**whole, "flux_parts");
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const FluxInputs in = TinyInputs(c, 2, 6, 3);
  at::NoGradGuard no_grad;
  auto want = (*whole)->Forward(in);
  ASSERT_TRUE(want.ok()) << want.status();

  // Stage boundaries 0 | 1 2 3 | (head): crosses the double/single seam.
  const std::vector<FluxPart> parts = {{0, 1, true, false}, {1, 4, false, false}, {4, 4, false, true}};
  FluxHidden hidden;
  at::Tensor got;
  models::SerialJointAttention attention;
  for (size_t i = 0; i < parts.size(); ++i) {
    auto stage = FluxTransformer::Create(c, at::kFloat, parts[i]);
    ASSERT_TRUE(stage.ok()) << stage.status();
    weights::LoadOptions options;
    EXPECT_FALSE(weights::LoadModuleWeights((*stage)->module(), *ckpt, options).ok()) << "unexpected keys";
    options.partial = true;
    ASSERT_TRUE(weights::LoadModuleWeights((*stage)->module(), *ckpt, options).ok()) << i;
    size_t held = 0;
    for (const auto& p : (*stage)->module().named_parameters()) {
      ++held;
      if (absl::StartsWith(p.key(), "transformer_blocks.") || absl::StartsWith(p.key(), "single_transformer_blocks.")) {
        const int index = std::stoi(p.key().substr(p.key().find('.') + 1)) +
                          (absl::StartsWith(p.key(), "single") ? c.num_layers : 0);
        EXPECT_TRUE(index >= parts[i].first_block && index < parts[i].end_block) << p.key();
      }
    }
    EXPECT_LT(held, (*whole)->module().named_parameters().size());
    EXPECT_EQ((*stage)->Forward(in).status().code(), absl::StatusCode::kFailedPrecondition);
    const at::Tensor temb = (*stage)->TimestepEmbedding(in.timestep, in.guidance, in.pooled_projections);
    const FluxConditioning conditioning = (*stage)->Condition(temb);
    if (parts[i].embedders) hidden = (*stage)->Embed(in.hidden_states, in.encoder_hidden_states);
    if (parts[i].end_block > parts[i].first_block) {  // another model's conditioning is refused, not used
      FluxHidden scratch = hidden;
      const absl::Status wrong = (*stage)->RunBlocks(scratch, (*whole)->Condition(temb),
                                                     (*stage)->Rope(in.txt_ids, in.img_ids, at::kCPU), attention);
      EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument) << wrong;
      EXPECT_TRUE(absl::StrContains(wrong.message(), "this part holds")) << wrong;
    }
    ASSERT_TRUE((*stage)->RunBlocks(hidden, conditioning, (*stage)->Rope(in.txt_ids, in.img_ids, at::kCPU), attention).ok());
    if (parts[i].head) got = (*stage)->Head(hidden.x, conditioning);
  }
  ASSERT_TRUE(got.defined());
  EXPECT_LT((got - *want).abs().max().item<double>(), 1e-5);
  std::filesystem::remove_all(dir);
}

// Under autograd the model builds a graph (training uses it) and computes
// the same values as inference.
TEST(FluxTransformer, DifferentiableUnderGradMode) {
  const FluxTransformerConfig c = TinyConfig();
  auto model = FluxTransformer::Create(c, at::kFloat);
  ASSERT_TRUE(model.ok());
  RandomiseParameters(**model);
  const FluxInputs in = TinyInputs(c, 1, 4, 2);
  at::Tensor inference;
  {
    at::NoGradGuard no_grad;
    inference = *(*model)->Forward(in);
  }
  auto out = (*model)->Forward(in);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->requires_grad());
  EXPECT_LT((*out - inference).abs().max().item<double>(), 1e-5);
  out->pow(2).mean().backward();
  int with_grad = 0, total = 0;
  for (const auto& p : (*model)->module().named_parameters()) {
    ++total;
    if (p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) ++with_grad;
  }
  // Every weight influences the output (biases of gates too).
  EXPECT_EQ(with_grad, total);
}

TEST(FluxTransformer, PartOutOfRange) {
  EXPECT_EQ(FluxTransformer::Create(TinyConfig(), at::kFloat, {2, 5, false, true}).status().message(),
            "flux: blocks [2, 5) are outside the model's 4 blocks");
}

}  // namespace
}  // namespace ditserve::worker::flux
