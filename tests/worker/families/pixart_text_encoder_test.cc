// PixArt's text side against PixArtSigmaPipeline.encode_prompt
// (clean_caption=False) on a directory ditserve-make-model writes: the T5
// states under the padding mask and the mask itself, for prompts that need
// lower-casing and stripping (ASCII, Latin-1, Cyrillic), one truncated at
// max_sequence_length and the empty prompt.

#include "worker/families/pixart/pixart_text_encoder.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/harness/binaries.h"
#include "tests/harness/reference.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::families {
namespace {

TEST(PixArtTextEncoder, MatchesEncodePrompt) {
  const std::string root = absl::StrCat(::testing::TempDir(), "/pixart_text_", getpid());
  const std::string model = root + "/model";
  std::filesystem::create_directories(root);
  const auto made = testing::RunOne({testing::BinDir() + "/ditserve-make-model", "--family=pixart-sigma",
                                     "--preset=tiny", "--seed=3", "--out=" + model});
  ASSERT_TRUE(made.exit.ok()) << made.output;
  const std::vector<std::pair<std::string, int>> prompts = {
      {"A Red Circle on a BLUE background", 300},
      {"  \tÀ CÔTÉ DE L'ÉGLISE, Ñandú  \n", 40},
      {"БОЛЬШОЙ Красный КРУГ", 24},
      {"a red circle on a blue background next to a green square under a white sky at noon", 8},
      {"", 16},
  };
  nlohmann::json spec = nlohmann::json::array();
  for (const auto& [p, n] : prompts) spec.push_back({p, n});
  std::ofstream(root + "/prompts.json") << spec.dump();
  const absl::Status ref =
      testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/pixart_text_reference.py",
                                  model + " " + root + "/expected.safetensors " + root + "/prompts.json",
                                  root + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  auto expected = weights::SafetensorsCheckpoint::Open(root + "/expected.safetensors");
  ASSERT_TRUE(expected.ok()) << expected.status();
  auto text = PixArtTextEncoder::Load(model, 300, at::kFloat, at::kCPU);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ((*text)->default_max_sequence_length(), 300);
  EXPECT_EQ((*text)->max_sequence_length_limit(), 300);  // the tokenizer's model_max_length
  EXPECT_EQ((*text)->pooled_dim(), 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE(prompts[i].first);
    auto e = (*text)->Encode(prompts[i].first, prompts[i].second);
    ASSERT_TRUE(e.ok()) << e.status();
    const at::Tensor want = *expected->Get(absl::StrCat("embeds.", i));
    const at::Tensor want_mask = *expected->Get(absl::StrCat("mask.", i));
    ASSERT_EQ(e->sequence.sizes(), want.sizes());
    ASSERT_TRUE(e->mask.defined());
    EXPECT_TRUE(at::equal(e->mask.to(at::kFloat), want_mask)) << e->mask << want_mask;
    EXPECT_LT((e->sequence - want).abs().max().item<double>(), 1e-4);
    EXPECT_EQ((*text)->SequenceTokens(prompts[i].second), want.size(1));
  }
}

// Python's lower().strip(), code point by code point.
TEST(PixArtTextEncoder, PreprocessLowersAndStrips) {
  EXPECT_EQ(PixArtPreprocessPrompt("  Hello WORLD \n"), "hello world");
  EXPECT_EQ(PixArtPreprocessPrompt("ÀÉÎÕÜ Ñ"), "àéîõü ñ");
  EXPECT_EQ(PixArtPreprocessPrompt("ПРИВЕТ"), "привет");
  EXPECT_EQ(PixArtPreprocessPrompt("日本語 ABC"), "日本語 abc");
  EXPECT_EQ(PixArtPreprocessPrompt("\xff\xfe x"), "\xef\xbf\xbd\xef\xbf\xbd x");  // invalid bytes: U+FFFD
  EXPECT_EQ(PixArtPreprocessPrompt("   "), "");
}

}  // namespace
}  // namespace ditserve::worker::families
