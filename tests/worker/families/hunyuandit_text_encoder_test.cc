// HunyuanDiT's text side against HunyuanDiTPipeline.encode_prompt (both
// encoders) on a directory ditserve-make-model writes: the BERT and mT5
// states under their padding masks, joined as HunyuanTextSequence lays
// them out, and the masks, for English, mixed case, accents, Chinese,
// punctuation, a prompt longer than both limits and the empty prompt; and
// max_sequence_length truncating mT5 while the sequence keeps its length.

#include "worker/families/hunyuandit/hunyuandit_text_encoder.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "util/read_file.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::families {
namespace {

TEST(HunyuanDiTTextEncoder, MatchesEncodePrompt) {
  const std::string root = absl::StrCat(::testing::TempDir(), "/hunyuandit_text_", getpid());
  const std::string model = root + "/model";
  std::filesystem::create_directories(root);
  const auto made = testing::RunOne({testing::BinDir() + "/ditserve-make-model", "--family=hunyuandit",
                                     "--preset=tiny", "--seed=3", "--out=" + model});
  ASSERT_TRUE(made.exit.ok()) << made.output;
  std::string longest;
  for (int i = 0; i < 40; ++i) longest += "a red circle on a blue background, ";
  const std::vector<std::string> prompts = {
      "A Red Circle on a BLUE background",
      "一个宇航员在骑马，在月球上。",
      "  À CÔTÉ DE L'ÉGLISE, Ñandú!? (c'est «très» bien)\n",
      longest,
      "",
  };
  std::ofstream(root + "/prompts.json") << nlohmann::json(prompts).dump();
  const absl::Status ref =
      testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/hunyuandit_text_reference.py",
                                  model + " " + root + "/expected.safetensors " + root + "/prompts.json",
                                  root + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  auto expected = weights::SafetensorsCheckpoint::Open(root + "/expected.safetensors");
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto json = util::ReadFileToString(model + "/transformer/config.json");
  ASSERT_TRUE(json.ok());
  auto config = hunyuandit::ParseHunyuanDiTConfig(*json);
  ASSERT_TRUE(config.ok()) << config.status();
  auto text = HunyuanDiTTextEncoder::Load(model, *config, at::kFloat, at::kCPU);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ((*text)->default_max_sequence_length(), 256);
  EXPECT_EQ((*text)->max_sequence_length_limit(), 256);
  EXPECT_EQ((*text)->pooled_dim(), 0);
  EXPECT_EQ((*text)->SequenceTokens(40), 77 + 256);
  const int64_t bert_width = config->cross_attention_dim, t5_width = config->cross_attention_dim_t5;
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE(prompts[i]);
    auto e = (*text)->Encode(prompts[i], 0);
    ASSERT_TRUE(e.ok()) << e.status();
    ASSERT_EQ(e->sequence.sizes(), (at::IntArrayRef{1, 77 + 256, std::max(bert_width, t5_width)}));
    const at::Tensor bert = *expected->Get(absl::StrCat("bert.", i)), t5 = *expected->Get(absl::StrCat("t5.", i));
    const at::Tensor mask = at::cat({*expected->Get(absl::StrCat("bert_mask.", i)),
                                     *expected->Get(absl::StrCat("t5_mask.", i))}, 1);
    EXPECT_TRUE(at::equal(e->mask.to(at::kFloat), mask)) << e->mask << mask;
    const double bert_err = (e->sequence.narrow(1, 0, 77).narrow(2, 0, bert_width) - bert).abs().max().item<double>();
    const double t5_err = (e->sequence.narrow(1, 77, 256).narrow(2, 0, t5_width) - t5).abs().max().item<double>();
    EXPECT_LT(bert_err, 1e-4);
    EXPECT_LT(t5_err, 1e-4);
    // Beyond each encoder's width the sequence is zero.
    if (bert_width < t5_width) {
      EXPECT_EQ(e->sequence.narrow(1, 0, 77).narrow(2, bert_width, t5_width - bert_width).abs().max().item<double>(), 0);
    }
  }
  // The long prompt fills both (BERT's 77 with [CLS] … [SEP], mT5's 256).
  EXPECT_EQ(expected->Get("bert_mask.3")->sum().item<double>(), 77);
  EXPECT_EQ(expected->Get("t5_mask.3")->sum().item<double>(), 256);
  // max_sequence_length 10 keeps 10 mT5 tokens (</s> last) and still pads to 256.
  auto short_t5 = (*text)->Encode(prompts[3], 10);
  ASSERT_TRUE(short_t5.ok()) << short_t5.status();
  EXPECT_EQ(short_t5->sequence.size(1), 77 + 256);
  EXPECT_EQ(short_t5->mask.narrow(1, 77, 256).sum().item<double>(), 10);
  EXPECT_TRUE(at::equal(short_t5->mask.narrow(1, 0, 77), *expected->Get("bert_mask.3")));
}

}  // namespace
}  // namespace ditserve::worker::families
