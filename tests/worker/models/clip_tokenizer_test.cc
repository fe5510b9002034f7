#include "worker/tokenizers/clip_tokenizer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tests/harness/reference.h"

namespace ditserve::worker::tokenizers {
namespace {


const std::vector<std::string> kStrings = {
    "a red circle on a blue background",
    "The Red  Square\ton\n\na BLUE background!!",
    "café crème, 42 cats & 7 dogs... it's they're we'll I'd",
    "<|startoftext|>the<|endoftext|> the",
    "emoji 🙂 and 中文 and Ελληνικά ΣΑΣ",
    "   leading and trailing   ",
    "",
    "don't stop-me now: 3.14159",
    "a a a a a a a a a a a a a a a a a a a a a a a a",
    "wow! stop!! now!?! ¡hola!",
    "THE <|ENDOFTEXT|> and <|endoftext|>!",
    "!",
};

class ClipTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = absl::StrCat(::testing::TempDir(), "/clip_tok_", getpid());
    std::filesystem::create_directories(dir_);
    const std::string input = dir_ + "/strings.json";
    std::ofstream(input) << nlohmann::json(kStrings).dump();
    const absl::Status ref = testing::RunPythonReference(
        testing::DirectoryOf(__FILE__) + "/clip_tokenizer_reference.py", dir_ + " < " + input, dir_ + "/reference.log");
    ASSERT_TRUE(ref.ok()) << ref;
    expected_ = nlohmann::json::parse(testing::ReadTextFile(dir_ + "/expected.json"));
    expected_bigg_ = nlohmann::json::parse(testing::ReadTextFile(dir_ + "/bigg/expected.json"));
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::string dir_;
  static nlohmann::json expected_;
  static nlohmann::json expected_bigg_;
};
std::string ClipTokenizerTest::dir_;
nlohmann::json ClipTokenizerTest::expected_;
nlohmann::json ClipTokenizerTest::expected_bigg_;

void ExpectMatches(const ClipTokenizer& tok, const nlohmann::json& expected) {
  EXPECT_EQ(tok.pad_id(), expected["pad_id"].get<int64_t>());
  for (size_t i = 0; i < kStrings.size(); ++i) {
    auto raw = tok.EncodeRaw(kStrings[i]);
    ASSERT_TRUE(raw.ok()) << raw.status();
    EXPECT_EQ(*raw, expected["raw"][i].get<std::vector<int64_t>>()) << "'" << kStrings[i] << "'";
    auto padded = tok.Encode(kStrings[i], 16);
    ASSERT_TRUE(padded.ok());
    EXPECT_EQ(*padded, expected["padded"][i].get<std::vector<int64_t>>()) << "'" << kStrings[i] << "'";
  }
}

TEST_F(ClipTokenizerTest, MatchesTransformers) {
  auto tok = ClipTokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  ExpectMatches(**tok, expected_);
}

// Stable Diffusion 3's tokenizer_2 (OpenCLIP-bigG) pads with "!" (id 0),
// named in tokenizer_config.json, special_tokens_map.json and
// added_tokens_decoder: "!" is a special token then, so "wow!" ends in id 0
// rather than "!</w>", and padding is id 0.
TEST_F(ClipTokenizerTest, BigGPadMatchesTransformers) {
  auto tok = ClipTokenizer::Load(dir_ + "/bigg");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->pad_id(), 0);
  EXPECT_EQ((*tok)->eos_id(), 536);
  ExpectMatches(**tok, expected_bigg_);
  EXPECT_EQ(*(*tok)->EncodeRaw("a!"), (std::vector<int64_t>{320, 0}));
  EXPECT_EQ(*(*tok)->Encode("a", 5), (std::vector<int64_t>{535, 320, 536, 0, 0}));
}

// special_tokens_map.json overrides tokenizer_config.json, as in
// transformers.
TEST_F(ClipTokenizerTest, SpecialTokensMapWins) {
  const std::string d = dir_ + "/override";
  std::filesystem::create_directories(d);
  std::filesystem::copy_file(dir_ + "/vocab.json", d + "/vocab.json", std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(dir_ + "/merges.txt", d + "/merges.txt", std::filesystem::copy_options::overwrite_existing);
  std::ofstream(d + "/tokenizer_config.json") << R"({"pad_token": "<|endoftext|>"})";
  std::ofstream(d + "/special_tokens_map.json") << R"({"pad_token": {"content": "!"}})";
  auto tok = ClipTokenizer::Load(d);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->pad_id(), 0);
  std::ofstream(d + "/special_tokens_map.json") << R"({"pad_token": "<|pad|>"})";
  EXPECT_EQ(ClipTokenizer::Load(d).status().code(), absl::StatusCode::kInvalidArgument);
  std::ofstream(d + "/special_tokens_map.json") << "[1, 2]";
  EXPECT_EQ(ClipTokenizer::Load(d).status().code(), absl::StatusCode::kInvalidArgument);
}

// Worked by hand from the reference vocabulary: the 256 byte symbols
// (ids 0-255; the printable bytes '!'..'~' come first, so 'a' (97) is id
// 64), their </w> forms (256-511), one id per merge in merges.txt order
// (512…), then <|startoftext|> (535) and <|endoftext|> (536).
TEST_F(ClipTokenizerTest, HandWorkedExample) {
  auto tok = ClipTokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok());
  // "a" is one symbol "a</w>" = 256 + 64. "red" = r e d</w>: the lowest-
  // ranked pair is (r, e) (merge 2), leaving "re" + "d</w>" (256 + 67)
  // since (re, d</w>) is no merge. "circle" merges c-i, ci-r, cir-c,
  // circ-l, circl-e</w> (merges 4-8) into "circle</w>" = 512 + 8.
  auto ids = (*tok)->EncodeRaw("a red circle");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int64_t>{320, 514, 323, 520}));
  // Upper case folds; max_length 7 pads with <|endoftext|>.
  EXPECT_EQ(*(*tok)->Encode("A RED circle", 7), (std::vector<int64_t>{535, 320, 514, 323, 520, 536, 536}));
  // Truncation keeps <|startoftext|>, the first tokens and <|endoftext|>.
  EXPECT_EQ(*(*tok)->Encode("a red circle", 4), (std::vector<int64_t>{535, 320, 514, 536}));
}

TEST_F(ClipTokenizerTest, Errors) {
  auto tok = ClipTokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->EncodeRaw(std::string("bad \xff utf8")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ClipTokenizer::Load(dir_ + "/nowhere").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ditserve::worker::tokenizers
