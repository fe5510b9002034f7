// PixArtTransformer2DModel against diffusers' on random checkpoints it
// writes itself (Σ's layout and α-1024's micro-conditions; non-square,
// two prompts with different padding masks), and the model run in two
// PipeFusion-like parts equal to the whole.

#include "worker/models/pixart/pixart_transformer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/weights/load_module.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::pixart {
namespace {

using models::DitConditioning;
using models::DitHidden;
using models::DitPart;
using models::DitPositions;

void CompareWithDiffusers(const std::string& variant) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/pixart_ref_", getpid(), "_", variant);
  std::filesystem::create_directories(dir);
  const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/pixart_reference.py",
                                                       dir + " " + variant, dir + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  auto config = ParsePixArtTransformerConfig(testing::ReadTextFile(dir + "/transformer/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  const bool alpha = variant == "alpha";
  EXPECT_EQ(config->use_additional_conditions, alpha);
  EXPECT_EQ(config->interpolation_scale, alpha ? 2.0 : 1.0);
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/transformer");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto io = weights::SafetensorsCheckpoint::Open(dir + "/io.safetensors");
  ASSERT_TRUE(io.ok()) << io.status();
  const at::Tensor x = *io->Get("hidden_states"), text = *io->Get("encoder_hidden_states"),
                   mask = *io->Get("encoder_attention_mask"), timestep = *io->Get("timestep"),
                   expected = *io->Get("expected");
  const models::DitImageSize size{96, 160};
  auto model = PixArtTransformer::Create(*config, at::kFloat, {}, models::ParameterInit::kUninitialized);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(weights::LoadModuleWeights((*model)->module(), *ckpt).ok());
  auto out = (*model)->Forward(x, text, mask, timestep, size);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), expected.sizes());
  const double err = (*out - expected).abs().max().item<double>();
  std::printf("%s: max-abs error %.3g (max |output| %.3g)\n", variant.c_str(), err, expected.abs().max().item<double>());
  EXPECT_LT(err, 1e-4);
  // The mask matters: without it the padded prompt's output changes.
  auto unmasked = (*model)->Forward(x, text, at::Tensor(), timestep, size);
  ASSERT_TRUE(unmasked.ok());
  EXPECT_GT((unmasked->select(0, 1) - expected.select(0, 1)).abs().max().item<double>(), 1e-3);
  EXPECT_LT((unmasked->select(0, 0) - expected.select(0, 0)).abs().max().item<double>(), 1e-4);

  // Two parts (blocks [0, 2) with the embedders, [2, 3) with the head),
  // each loading only its tensors: the prediction channels of the whole.
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), rows = H / 2, cols = W / 2, S = rows * cols;
  const at::Tensor packed = x.reshape({B, 4, rows, 2, cols, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({B, S, 16});
  models::SerialJointAttention attention;
  attention.set_text_mask(mask.gt(0.5));
  DitHidden hidden;
  at::Tensor head;
  for (const DitPart& part : {DitPart{0, 2, true, false}, DitPart{2, -1, false, true}}) {
    auto stage = PixArtTransformer::Create(*config, at::kFloat, part, models::ParameterInit::kUninitialized);
    ASSERT_TRUE(stage.ok()) << stage.status();
    weights::LoadOptions options;
    options.partial = true;
    ASSERT_TRUE(weights::LoadModuleWeights((*stage)->module(), *ckpt, options).ok());
    const DitConditioning conditioning = (*stage)->Condition((*stage)->TimeEmbedding(timestep, {}, {}, size));
    const DitPositions positions = (*stage)->Positions(text.size(1), rows, cols, 0, S, at::kCPU);
    if (part.embedders) hidden = (*stage)->Embed(packed, text, positions);
    ASSERT_TRUE((*stage)->RunBlocks(hidden, conditioning, positions, attention).ok());
    if (part.head) head = (*stage)->Head(hidden.x, conditioning);
  }
  const at::Tensor whole_prediction = expected.narrow(1, 0, 4)
                                          .reshape({B, 4, rows, 2, cols, 2})
                                          .permute({0, 2, 4, 1, 3, 5})
                                          .reshape({B, S, 16});
  EXPECT_LT((head - whole_prediction).abs().max().item<double>(), 1e-4);
  // The cross-attention K/V were computed once per block and kept.
  for (int layer = 0; layer < 3; ++layer) EXPECT_NE(attention.TextKv(layer), nullptr) << layer;
}

TEST(PixArtTransformer, SigmaMatchesDiffusers) { CompareWithDiffusers("sigma"); }
TEST(PixArtTransformer, AlphaWithMicroConditionsMatchesDiffusers) { CompareWithDiffusers("alpha"); }

TEST(PixArtTransformer, RejectsConfigsItDoesNotImplement) {
  const auto error = [](const std::string& json) {
    auto c = ParsePixArtTransformerConfig(json);
    return c.ok() ? std::string("ok") : std::string(c.status().message());
  };
  const std::string base = R"("num_attention_heads": 2, "attention_head_dim": 12, "cross_attention_dim": 24, "caption_channels": 20)";
  EXPECT_EQ(error("{" + base + "}"), "ok");
  EXPECT_NE(error("{" + base + R"(, "norm_type": "ada_norm_zero"})").find("norm_type"), std::string::npos);
  EXPECT_NE(error("{" + base + R"(, "patch_size": 4})").find("patch_size 4"), std::string::npos);
  EXPECT_NE(error("{" + base + R"(, "out_channels": 6})").find("out_channels 6"), std::string::npos);
  EXPECT_NE(error(R"({"num_attention_heads": 2, "attention_head_dim": 12, "cross_attention_dim": 24})")
                .find("caption_channels is required"),
            std::string::npos);
  EXPECT_NE(error(R"({"num_attention_heads": 2, "attention_head_dim": 12, "cross_attention_dim": 16, "caption_channels": 20})")
                .find("cross_attention_dim 16"),
            std::string::npos);
  // α's size embeddings split the width in thirds.
  EXPECT_NE(error(R"({"num_attention_heads": 2, "attention_head_dim": 8, "cross_attention_dim": 16, "caption_channels": 20, "sample_size": 128})")
                .find("multiple of 3"),
            std::string::npos);
}

// The sin-cos table by hand for one token: column then row halves, each
// sines then cosines, positions scaled by base_size / n / interpolation.
TEST(PixArtTransformer, PositionEmbeddingClosedForm) {
  const at::Tensor t = PixArtPositionEmbedding(8, 3, 5, 4.0, 2.0);
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{15, 8}));
  const int r = 2, c = 3;
  const double pc = c / (5.0 / 4.0) / 2.0, pr = r / (3.0 / 4.0) / 2.0;
  const double w[2] = {1.0, 1.0 / 100.0};  // 10000^(-k/2), k = 0, 1
  const at::Tensor row = t[r * 5 + c];
  for (int k = 0; k < 2; ++k) {
    EXPECT_NEAR(row[k].item<double>(), std::sin(pc * w[k]), 1e-6);
    EXPECT_NEAR(row[2 + k].item<double>(), std::cos(pc * w[k]), 1e-6);
    EXPECT_NEAR(row[4 + k].item<double>(), std::sin(pr * w[k]), 1e-6);
    EXPECT_NEAR(row[6 + k].item<double>(), std::cos(pr * w[k]), 1e-6);
  }
}

}  // namespace
}  // namespace ditserve::worker::pixart
