#include "worker/tokenizers/t5_tokenizer.h"

#include <ATen/ATen.h>
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
    "A Green Triangle on a yellow background.",
    "squares and circles, 42 of them!",
    "  extra   spaces  ",
    "unseen words: zebra quokka",
    "",
    "a red circle on a blue background a red circle on a blue background a red circle",
};

// Trains a unigram model with the real SentencePiece trainer (through the
// shim), in a process that also runs LibTorch (whose bundled protobuf must
// not collide with libsentencepiece's), and compares with transformers.
TEST(T5Tokenizer, TrainedModelMatchesTransformers) {
  const at::Tensor t = at::ones({2}) * 3;  // LibTorch is loaded and working
  ASSERT_EQ(t.sum().item<float>(), 6.f);
  const std::string dir = absl::StrCat(::testing::TempDir(), "/t5_tok_", getpid());
  std::filesystem::create_directories(dir);
  {
    std::ofstream corpus(dir + "/corpus.txt");
    const char* colours[] = {"red", "green", "blue", "yellow", "white", "black", "purple", "orange"};
    const char* shapes[] = {"circle", "square", "triangle"};
    for (const char* c : colours)
      for (const char* s : shapes)
        for (const char* b : colours) corpus << "a " << c << " " << s << " on a " << b << " background\n";
  }
  absl::Status trained = TrainSentencePiece(absl::StrCat(
      "--input=", dir, "/corpus.txt --model_prefix=", dir, "/spiece --vocab_size=30 --model_type=unigram ",
      "--character_coverage=1.0 --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --minloglevel=2"));
  ASSERT_TRUE(trained.ok()) << trained;
  auto tok = T5Tokenizer::Load(dir + "/spiece.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->eos_id(), 1);
  EXPECT_EQ((*tok)->pad_id(), 0);
  EXPECT_EQ((*tok)->vocab_size(), 30);

  std::ofstream(dir + "/strings.json") << nlohmann::json(kStrings).dump();
  const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/t5_tokenizer_reference.py",
                                                       dir + " 16 < " + dir + "/strings.json", dir + "/reference.log");
  ASSERT_TRUE(ref.ok()) << ref;
  std::ifstream in(dir + "/expected.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json expected = nlohmann::json::parse(ss.str());
  for (size_t i = 0; i < kStrings.size(); ++i) {
    auto ids = (*tok)->Encode(kStrings[i], 16);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, expected[i].get<std::vector<int64_t>>()) << "'" << kStrings[i] << "'";
  }
  // Truncation keeps </s> last; unknown characters map to <unk>.
  auto cut = (*tok)->Encode("a red circle on a blue background a red circle", 4);
  ASSERT_EQ(cut->size(), 4u);
  EXPECT_EQ(cut->back(), 1);
  // The mask: 1 for the pieces and </s>, 0 for the padding; the ids are
  // Encode's.
  for (const std::string text : {"a red circle", "", "a red circle on a blue background a red circle"}) {
    auto e = (*tok)->EncodeWithMask(text, 8);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->ids, *(*tok)->Encode(text, 8)) << text;
    const auto raw = (*tok)->EncodeRaw(text);
    const size_t real = std::min<size_t>(raw->size() + 1, 8);
    std::vector<int64_t> want(8, 0);
    std::fill(want.begin(), want.begin() + real, 1);
    EXPECT_EQ(e->mask, want) << text;
  }
  auto unk = (*tok)->EncodeRaw("§");
  ASSERT_TRUE(unk.ok());
  EXPECT_NE(std::find(unk->begin(), unk->end(), 2), unk->end());
  std::filesystem::remove_all(dir);
}

TEST(T5Tokenizer, Errors) {
  EXPECT_EQ(T5Tokenizer::Load("/nonexistent/spiece.model").status().code(), absl::StatusCode::kNotFound);
  const std::string bad = absl::StrCat(::testing::TempDir(), "/bad_", getpid(), ".model");
  std::ofstream(bad) << "not a model";
  EXPECT_EQ(T5Tokenizer::Load(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainSentencePiece("--input=/nonexistent --model_prefix=/tmp/x --vocab_size=10").code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace ditserve::worker::tokenizers
