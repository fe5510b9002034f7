// HunyuanDiT2DModel against diffusers' on random checkpoints it writes
// itself (v1.2's and v1.1's layouts; non-square, two prompts with different
// padding in both text streams; six layers, so two long skips), the
// pipeline's 2-D RoPE on several grids, and the model run in PipeFusion-
// like parts (a boundary the skips cross) equal to the whole.

#include "worker/models/hunyuandit/hunyuandit_transformer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"
#include "worker/weights/load_module.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::hunyuandit {
namespace {

using models::DitConditioning;
using models::DitHidden;
using models::DitPart;
using models::DitPositions;

void CompareWithDiffusers(const std::string& variant) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/hunyuandit_ref_", getpid(), "_", variant);
  std::filesystem::create_directories(dir);
  const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/hunyuandit_reference.py",
                                                       dir + " " + variant, dir + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  auto config = ParseHunyuanDiTConfig(testing::ReadTextFile(dir + "/transformer/config.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->use_style_cond_and_image_meta_size, variant == "v11");
  EXPECT_EQ(config->ff_inner_dim(), 104);  // int(24 · 4.3637)
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/transformer");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto io = weights::SafetensorsCheckpoint::Open(dir + "/io.safetensors");
  ASSERT_TRUE(io.ok()) << io.status();
  const auto get = [&](const std::string& name) { return *io->Get(name); };
  const at::Tensor x = get("hidden_states"), timestep = get("timestep"), bert = get("encoder_hidden_states"),
                   mask = get("text_embedding_mask"), t5 = get("encoder_hidden_states_t5"),
                   mask_t5 = get("text_embedding_mask_t5"), expected = get("expected");
  for (auto [rows, cols] : std::vector<std::pair<int, int>>{{6, 10}, {8, 8}, {10, 6}, {7, 3}, {64, 64}, {48, 80}}) {
    auto [cos, sin] = HunyuanRope(12, rows, cols);
    const std::string key = absl::StrCat(rows, "x", cols);
    EXPECT_LT((cos - get("rope_cos_" + key)).abs().max().item<double>(), 2e-6) << key;
    EXPECT_LT((sin - get("rope_sin_" + key)).abs().max().item<double>(), 2e-6) << key;
  }
  auto model = HunyuanDiTTransformer::Create(*config, at::kFloat, {}, models::ParameterInit::kUninitialized);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(weights::LoadModuleWeights((*model)->module(), *ckpt).ok());
  auto out = (*model)->Forward(x, timestep, bert, mask, t5, mask_t5);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), expected.sizes());
  const double err = (*out - expected).abs().max().item<double>();
  std::printf("%s: max-abs error %.3g (max |output| %.3g)\n", variant.c_str(), err, expected.abs().max().item<double>());
  EXPECT_LT(err, 1e-4);
  // The masks matter: with every token real, the padded prompt changes.
  auto unmasked = (*model)->Forward(x, timestep, bert, at::ones_like(mask), t5, at::ones_like(mask_t5));
  ASSERT_TRUE(unmasked.ok());
  EXPECT_GT((*unmasked - expected).abs().max().item<double>(), 1e-3);

  // Parts [0, 4) with the embedders and [4, 6) with the head: blocks 4 and
  // 5 take skips from blocks 1 and 0, which cross the boundary.
  EXPECT_EQ((*model)->SkipsBefore(4), 2);
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), rows = H / 2, cols = W / 2, S = rows * cols;
  const at::Tensor packed = x.reshape({B, 4, rows, 2, cols, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({B, S, 16});
  const at::Tensor text = HunyuanTextSequence(*config, bert, t5);
  const at::Tensor text_mask = at::cat({mask, mask_t5}, 1);
  models::SerialJointAttention attention;
  DitHidden hidden;
  at::Tensor head;
  for (const DitPart& part : {DitPart{0, 4, true, false}, DitPart{4, -1, false, true}}) {
    auto stage = HunyuanDiTTransformer::Create(*config, at::kFloat, part, models::ParameterInit::kUninitialized);
    ASSERT_TRUE(stage.ok()) << stage.status();
    weights::LoadOptions options;
    options.partial = true;
    ASSERT_TRUE(weights::LoadModuleWeights((*stage)->module(), *ckpt, options).ok());
    const DitConditioning conditioning =
        (*stage)->Condition((*stage)->TimeEmbedding(timestep, {}, (*stage)->PooledText(text), {8 * H, 8 * W}));
    const DitPositions positions = (*stage)->Positions(text.size(1), rows, cols, 0, S, at::kCPU);
    if (part.embedders) hidden = (*stage)->Embed(packed, text, positions, text_mask);
    ASSERT_EQ(hidden.skips.size(), static_cast<size_t>((*stage)->SkipsBefore(part.first_block)));
    ASSERT_TRUE((*stage)->RunBlocks(hidden, conditioning, positions, attention).ok());
    if (part.head) head = (*stage)->Head(hidden.x, conditioning);
  }
  EXPECT_TRUE(hidden.skips.empty());
  const at::Tensor whole_prediction = expected.narrow(1, 0, 4)
                                          .reshape({B, 4, rows, 2, cols, 2})
                                          .permute({0, 2, 4, 1, 3, 5})
                                          .reshape({B, S, 16});
  EXPECT_LT((head - whole_prediction).abs().max().item<double>(), 1e-4);
  for (int layer = 0; layer < 6; ++layer) EXPECT_NE(attention.TextKv(layer), nullptr) << layer;
  // A stage handed too few skips says so instead of reading past them.
  auto last = HunyuanDiTTransformer::Create(*config, at::kFloat, DitPart{4, -1, false, true});
  ASSERT_TRUE(last.ok());
  DitHidden bare{at::Tensor(), at::zeros({B, S, 24}), {}};
  models::SerialJointAttention fresh;
  const absl::Status s = (*last)->RunBlocks(
      bare, (*last)->Condition((*last)->TimeEmbedding(timestep, {}, at::zeros({B, 16}), {96, 160})),
      (*last)->Positions(0, rows, cols, 0, S, at::kCPU), fresh);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST(HunyuanDiTTransformer, V12MatchesDiffusers) { CompareWithDiffusers("v12"); }
TEST(HunyuanDiTTransformer, V11WithStyleAndMetaSizeMatchesDiffusers) { CompareWithDiffusers("v11"); }

// The skip stack between blocks, by hand: N = 40 (v1.2) pushes after
// blocks 0…18 and pops at 21…39; N = 6 pushes after 0 and 1, pops at 4
// and 5. An odd N is refused (diffusers' stack would run dry).
TEST(HunyuanDiTTransformer, SkipsBeforeEachBlock) {
  HunyuanDiTConfig c;
  c.num_layers = 40;
  c.num_attention_heads = 2;
  c.attention_head_dim = 8;
  c.hidden_size = 16;
  c.cross_attention_dim_t5 = 16;
  c.pooled_projection_dim = 8;
  c.cross_attention_dim = 8;
  c.in_channels = 4;
  c.text_len = 2;
  c.text_len_t5 = 2;
  c.mlp_ratio = 1;
  c.use_style_cond_and_image_meta_size = false;
  auto m = HunyuanDiTTransformer::Create(c, at::kFloat, DitPart{0, 0, false, false});
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<int> expected;
  int stack = 0;
  for (int b = 0; b <= 40; ++b) {
    expected.push_back(stack);
    if (b < 40 && b > 20) --stack;
    if (b < 19) ++stack;
  }
  for (int b = 0; b <= 40; ++b) EXPECT_EQ((*m)->SkipsBefore(b), expected[b]) << b;
  EXPECT_EQ((*m)->SkipsBefore(19), 19);
  EXPECT_EQ((*m)->SkipsBefore(21), 19);
  EXPECT_EQ((*m)->SkipsBefore(22), 18);
  c.num_layers = 6;
  auto six = HunyuanDiTTransformer::Create(c, at::kFloat, DitPart{0, 0, false, false});
  ASSERT_TRUE(six.ok());
  const int want[] = {0, 1, 2, 2, 2, 1, 0};
  for (int b = 0; b <= 6; ++b) EXPECT_EQ((*six)->SkipsBefore(b), want[b]) << b;
  c.num_layers = 5;
  auto five = HunyuanDiTTransformer::Create(c, at::kFloat, DitPart{0, 0, false, false});
  ASSERT_FALSE(five.ok());
  EXPECT_NE(five.status().message().find("num_layers 5 must be even"), std::string::npos) << five.status();
}

TEST(HunyuanDiTTransformer, RejectsConfigsItDoesNotImplement) {
  const auto error = [](const std::string& json) {
    auto c = ParseHunyuanDiTConfig(json);
    return c.ok() ? std::string("ok") : std::string(c.status().message());
  };
  const std::string base = R"("num_attention_heads": 2, "attention_head_dim": 12, "hidden_size": 24, "in_channels": 4)";
  EXPECT_EQ(error("{" + base + "}"), "ok");
  EXPECT_NE(error("{" + base + R"(, "activation_fn": "geglu"})").find("activation_fn"), std::string::npos);
  EXPECT_NE(error("{" + base + R"(, "patch_size": 4})").find("patch_size 4"), std::string::npos);
  EXPECT_NE(error(R"({"num_attention_heads": 2, "attention_head_dim": 12, "hidden_size": 32, "in_channels": 4})")
                .find("hidden_size 32"),
            std::string::npos);
  EXPECT_NE(error(R"({"num_attention_heads": 2, "attention_head_dim": 10, "hidden_size": 20, "in_channels": 4})")
                .find("multiple of 4"),
            std::string::npos);
  EXPECT_NE(error("{" + base + R"(, "cross_attention_dim_t5": 12})").find("multiple of 8"), std::string::npos);
  EXPECT_NE(error(R"({"num_attention_heads": 2, "attention_head_dim": 12, "hidden_size": 24})").find("in_channels"),
            std::string::npos);
  EXPECT_NE(error("{" + base + R"(, "mlp_ratio": 0})").find("mlp_ratio"), std::string::npos);
}

}  // namespace
}  // namespace ditserve::worker::hunyuandit
