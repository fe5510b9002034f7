#include "worker/models/flux/flux_transformer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/weights/load_module.h"
#include "worker/weights/safetensors.h"

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

}  // namespace
}  // namespace ditserve::worker::flux
