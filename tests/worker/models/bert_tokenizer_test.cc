#include "worker/tokenizers/bert_tokenizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/harness/reference.h"
#include "tools/make_model/bert_writer.h"
#include "tools/make_model/caption_corpus.h"
#include "worker/tokenizers/bert_normalizer.h"

namespace ditserve::worker::tokenizers {
namespace {

using testing::ReadTextFile;

constexpr int kGenerated = 3000;

// Tokenizer configurations: subdirectory name -> tokenizer_config.json
// changes to the written one.
const std::vector<std::pair<std::string, nlohmann::ordered_json>> kConfigs = {
    {"lower", nlohmann::ordered_json::object()},
    {"cased", {{"do_lower_case", false}}},                               // strip_accents null: follows (false)
    {"lower_keep_accents", {{"do_lower_case", true}, {"strip_accents", false}}},
    {"cased_strip_accents", {{"do_lower_case", false}, {"strip_accents", true}}},
    {"no_chinese", {{"tokenize_chinese_chars", false}}},
};

struct Combo {
  const char* name;
  BertNormalizerOptions options;
};
const std::vector<Combo> kCombos = {
    {"lower_strip", {true, true, true}},   {"cased", {false, false, true}},
    {"lower_keep", {true, false, true}},   {"cased_strip", {false, true, true}},
    {"lower_strip_nochinese", {true, true, false}},
};

// Seeded prompts mixing every kind of text BERT meets.
std::vector<std::string> GeneratedStrings() {
  std::vector<std::string> words;
  for (const std::string& line : tools::make_model::CaptionCorpus()) {
    for (absl::string_view w : absl::StrSplit(line, ' ', absl::SkipEmpty())) words.emplace_back(w);
  }
  const std::vector<std::string> accents = {
      "é", "É", "Å", "å", "ñ", "Ñ", "ü", "Ü", "ø", "ß", "ẞ", "İ", "ı", "Σ", "σ", "ς", "ΣΑΣ", "Ǆ", "ǅ", "ﬁ", "Ω", "Å",
      "K", "e\u0301", "a\u030A", "n\u0303", "\u0301", "\u0308\u0301", "Ḱ", "ǰ", "ŉ", "café", "naïve", "Ångström",
      "crème brûlée", "ΆΈΉ", "Привет", "ЁЖ", "עברית", "العربية", "हिन्दी", "ไทย", "ტ", "Ꭰ", "ꭰ", "Ⓐ", "ⓐ", "ǈ",
      "\u1E9E", "\u0345", "\u03D0", "\u1FBC", "Ꙋ", "\uA7C0", "\uA7D0", "𐐀", "𞤀"};
  const std::vector<std::string> cjk = {
      "中", "文", "红色", "的", "圆形", "在", "蓝色", "背景", "上", "一只猫坐在椅子上", "龘", "𠀀", "豈", "\U0002B820",
      "\U0002B91F", "\U0002B920", "\U00030000", "ひらがな", "カタカナ", "ｶﾀｶﾅ", "がぎ", "한국어", "안녕하세요", "ＡＢＣ",
      "ｆｕｌｌ", "１２３", "〇", "㐀", "乾隆", "中文English混合", "日本語テキスト", "ㄱㄴ", "ᄀ"};
  const std::vector<std::string> punctuation = {
      "“", "”", "—", "…", "，", "。", "「", "」", "‘", "’", "¿", "¡", "«", "»", "、", "・", "‐", "–", "―", "※", "⁂",
      "§", "¶", "·", "!", "\"", "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/", ":", ";", "<", "=",
      ">", "?", "@", "[", "\\", "]", "^", "_", "`", "{", "|", "}", "~", "⹃", "⹎", "\u2E52", "᙭", "\U000111C9",
      "\u061D", "¥", "€", "©", "™", "→", "√", "∞", "°", "×", "÷", "'s", "...", "?!", "--", "[CLS]", "[SEP]", "[PAD]",
      "[MASK]", "[UNK]", "[cls]", "[Sep]", "x[SEP]y", "[[CLS]]", "[unused1]", "[CLS][SEP]"};
  const std::vector<std::string> digits = {"0", "7", "42", "3.14", "1,000", "2024年", "12:30", "٣", "௫", "½", "²", "Ⅻ"};
  const std::vector<std::string> emoji = {"🙂", "😀", "👍🏽", "👨\u200D👩\u200D👧", "🇫🇷", "❤️", "⭐", "🐱cat",
                                          "🥰", "🫠", "\U0001FA75"};
  const std::vector<std::string> controls = {
      std::string(1, '\0'), "\x01", "\x7f", "\u0085", "\u200B", "\uFEFF", "\u00AD", "\uE000", "\U000F0000",
      "\uFFFD", "\u0378", "\u0890", "\U00013430", "\u061C", "\u2066", "\x1b[0m", "\U000E0001", "\U000E0100"};
  const std::vector<std::string> spaces = {" ", "  ", "\t", "\n", "\r\n", "\v", "\f", "\u00A0", "\u3000", "\u2028",
                                           "\u1680", "\u2009", "\u202F", "\u205F", "\u180E", "\u200A", ""};
  const std::vector<std::string> unmatched = {"Ж", "ʘ", "ק", "ⴰ", "qzxv", "ǂ", "☃", "ꙮ", "𝔘𝔫𝔦", "zzzzzzzzzzzzq"};
  const std::vector<std::string> broken = {"\xff", "\xc3", "\xe4\xb8", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf",
                                           "\x80\x80", "caf\xc3", "\xe4\xb8\xad\xe4"};
  std::mt19937 rng(20240611);
  const auto pick = [&](const std::vector<std::string>& pool) -> const std::string& { return pool[rng() % pool.size()]; };
  const auto mixed_case = [&](std::string w) {
    switch (rng() % 4) {
      case 0: for (char& ch : w) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch))); break;
      case 1: if (!w.empty()) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0]))); break;
      case 2: for (char& ch : w) if (rng() % 3 == 0) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch))); break;
      default: break;
    }
    return w;
  };
  std::vector<std::string> out;
  while (static_cast<int>(out.size()) < kGenerated) {
    const bool long_prompt = rng() % 10 == 0;
    const int fragments = long_prompt ? 40 + static_cast<int>(rng() % 60) : 1 + static_cast<int>(rng() % 12);
    std::string s;
    for (int f = 0; f < fragments; ++f) {
      switch (rng() % 16) {
        case 0: case 1: case 2: case 3: s += mixed_case(pick(words)); break;
        case 4: s += pick(accents); break;
        case 5: case 6: s += pick(cjk); break;
        case 7: case 8: s += pick(punctuation); break;
        case 9: s += pick(digits); break;
        case 10: s += pick(emoji); break;
        case 11: s += pick(controls); break;
        case 12: s += pick(unmatched); break;
        case 13: {  // a long word: 90-130 characters, letters or accented
          const int n = 90 + static_cast<int>(rng() % 41);
          const std::string unit = rng() % 2 ? std::string(1, static_cast<char>('a' + rng() % 26)) : pick(accents);
          for (int i = 0; i < n; ++i) s += unit;
          break;
        }
        case 14: if (rng() % 4 == 0) s += pick(broken); else s += mixed_case(pick(words)); break;
        default: s += pick(spaces); break;
      }
      if (rng() % 3 != 0) s += pick(spaces);
    }
    out.push_back(s);
  }
  // Fixed edge cases.
  for (const std::string& s : std::vector<std::string>{"", " ", "   \t\n  ", "\u3000\u00A0", std::string(100, 'a'), std::string(101, 'a'),
                        std::string(100, 'a') + "é", "[CLS]", "a[MASK]b", std::string("\0\0", 2), "\xff\xfe",
                        "The RED circle, on a BLUE background!", "一个红色的圆形在蓝色背景上",
                        "ΣΑΣ ΟΔΟΣ", "İstanbul"}) {
    out.push_back(s);
  }
  return out;
}

class BertTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = absl::StrCat(::testing::TempDir(), "/bert_tok_", getpid());
    std::filesystem::create_directories(dir_);
    auto size = tools::make_model::WriteBertTokenizer(dir_ + "/lower", 3000, 77);
    ASSERT_TRUE(size.ok()) << size.status();
    vocab_size_ = *size;
    nlohmann::ordered_json names = nlohmann::ordered_json::array();
    for (const auto& [name, changes] : kConfigs) {
      names.push_back(name);
      if (name == "lower") continue;
      const std::string d = dir_ + "/" + name;
      std::filesystem::create_directories(d);
      for (const char* f : {"/vocab.txt", "/special_tokens_map.json"}) {
        std::filesystem::copy_file(dir_ + "/lower" + f, d + f, std::filesystem::copy_options::overwrite_existing);
      }
      auto config = nlohmann::ordered_json::parse(ReadTextFile(dir_ + "/lower/tokenizer_config.json"));
      config.update(changes);
      std::ofstream(d + "/tokenizer_config.json") << config.dump(2);
    }
    std::ofstream(dir_ + "/configs.json") << names.dump();
    nlohmann::json combos = nlohmann::json::array();
    for (const Combo& c : kCombos) {
      combos.push_back({c.name, c.options.lowercase, c.options.strip_accents, c.options.handle_chinese_chars});
    }
    std::ofstream(dir_ + "/combos.json") << combos.dump();
    strings_ = GeneratedStrings();
    nlohmann::json hex = nlohmann::json::array();
    for (const std::string& s : strings_) hex.push_back(absl::BytesToHexString(s));
    std::ofstream(dir_ + "/strings.json") << hex.dump();
    const absl::Status ref = testing::RunPythonReference(testing::DirectoryOf(__FILE__) + "/bert_tokenizer_reference.py",
                                                         dir_, dir_ + "/reference.log");
    ASSERT_TRUE(ref.ok()) << ref;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::string dir_;
  static int vocab_size_;
  static std::vector<std::string> strings_;
};
std::string BertTokenizerTest::dir_;
int BertTokenizerTest::vocab_size_ = 0;
std::vector<std::string> BertTokenizerTest::strings_;

std::string Printable(const std::string& s) { return absl::CHexEscape(s); }

TEST_F(BertTokenizerTest, GeneratedStringsMatchTransformers) {
  ASSERT_GE(strings_.size(), 3000u);
  int compared = 0, mismatches = 0;
  for (const auto& [name, changes] : kConfigs) {
    SCOPED_TRACE(name);
    auto tok = BertTokenizer::Load(dir_ + "/" + name);
    ASSERT_TRUE(tok.ok()) << tok.status();
    const nlohmann::json expected = nlohmann::json::parse(ReadTextFile(dir_ + "/" + name + "/expected.json"));
    EXPECT_EQ((*tok)->pad_id(), expected["pad_id"].get<int64_t>());
    EXPECT_EQ((*tok)->vocab_size(), expected["vocab_size"].get<int>());
    EXPECT_EQ((*tok)->model_max_length(), 77);
    std::printf("%s: transformers' normaliser %s; the legacy Python BertTokenizer differs on %d of %zu strings\n",
                name.c_str(), expected["normalizer"].get<std::string>().c_str(),
                expected["legacy_mismatch_count"].get<int>(), strings_.size());
    for (size_t i = 0; i < strings_.size(); ++i) {
      ++compared;
      const std::vector<int64_t> raw = (*tok)->EncodeRaw(strings_[i]);
      const BertEncoding enc = (*tok)->Encode(strings_[i], 77);
      const bool same = raw == expected["raw"][i].get<std::vector<int64_t>>() &&
                        enc.ids == expected["ids"][i].get<std::vector<int64_t>>() &&
                        enc.mask == expected["mask"][i].get<std::vector<int64_t>>();
      if (!same && ++mismatches <= 10) {
        ADD_FAILURE() << "string " << i << " '" << Printable(strings_[i]) << "': ours ["
                      << absl::StrJoin(raw, ",") << "] transformers " << expected["raw"][i].dump();
      }
    }
  }
  std::printf("%d strings x %zu configs = %d encodings compared with transformers, %d mismatches\n",
              static_cast<int>(strings_.size()), kConfigs.size(), compared, mismatches);
  EXPECT_EQ(mismatches, 0);
}

// Every code point (but surrogates and ","), as "a" + c + "a,", through
// the normaliser and pre-tokeniser, against the tokenizers library's.
TEST_F(BertTokenizerTest, EveryCodePointMatchesTransformers) {
  std::vector<char32_t> code_points;
  for (char32_t c = 0; c < 0x110000; ++c) {
    if ((c < 0xD800 || c > 0xDFFF) && c != U',') code_points.push_back(c);
  }
  for (const Combo& combo : kCombos) {
    SCOPED_TRACE(combo.name);
    std::ifstream in(absl::StrCat(dir_, "/codepoints_", combo.name, ".txt"), std::ios::binary);
    ASSERT_TRUE(in);
    int differing = 0;
    std::string line;
    for (size_t start = 0; start < code_points.size(); start += 4096) {
      ASSERT_TRUE(std::getline(in, line)) << "reference ends before code point " << static_cast<unsigned>(code_points[start]);
      const size_t end = std::min(code_points.size(), start + 4096);
      std::u32string text;
      for (size_t k = start; k < end; ++k) text += std::u32string(U"a") + code_points[k] + U"a,";
      std::vector<std::string> ours;
      for (const std::u32string& w : BertPreTokenize(text, combo.options)) ours.push_back(EncodeUtf8(w));
      const std::vector<std::string> theirs = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (ours == theirs) continue;
      // Find the code points: one group of words per "a" + c + "a,".
      size_t i = 0, j = 0;
      for (size_t k = start; k < end; ++k) {
        std::vector<std::string> a, b;
        while (i < ours.size() && ours[i] != ",") a.push_back(ours[i++]);
        while (j < theirs.size() && theirs[j] != ",") b.push_back(theirs[j++]);
        ++i, ++j;
        if (a != b && ++differing <= 40) {
          char hex[16];
          std::snprintf(hex, sizeof(hex), "U+%04X", static_cast<unsigned>(code_points[k]));
          ADD_FAILURE() << hex << ": ours [" << absl::StrJoin(a, " ") << "] transformers [" << absl::StrJoin(b, " ")
                        << "]";
        }
      }
    }
    std::printf("%s: %zu code points compared, %d differ\n", combo.name, code_points.size(), differing);
    EXPECT_EQ(differing, 0);
  }
}

TEST_F(BertTokenizerTest, HandWorked) {
  auto tok = BertTokenizer::Load(dir_ + "/lower");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const BertTokenizer& t = **tok;
  EXPECT_EQ(t.vocab_size(), vocab_size_);
  std::printf("written vocabulary: %d entries\n", vocab_size_);
  EXPECT_EQ(t.pad_id(), tools::make_model::kBertPadId);
  EXPECT_EQ(t.cls_id(), tools::make_model::kBertClsId);
  EXPECT_EQ(t.sep_id(), tools::make_model::kBertSepId);
  EXPECT_EQ(t.unk_id(), tools::make_model::kBertUnkId);
  // Lower case, accents stripped, punctuation split: "Red, CIRCLE!" ==
  // "red , circle !"; "Réd" is "red".
  EXPECT_EQ(t.EncodeRaw("Red, CIRCLE!"), t.EncodeRaw("red , circle !"));
  EXPECT_EQ(t.EncodeRaw("Réd"), t.EncodeRaw("red"));
  EXPECT_EQ(t.EncodeRaw("red").size(), 1u);
  // Chinese ideographs are one token each.
  EXPECT_EQ(t.EncodeRaw("红色的圆形").size(), 5u);
  for (int64_t id : t.EncodeRaw("红色的圆形")) EXPECT_NE(id, t.unk_id());
  // A word of 101 characters is [UNK]; one of 100 is not.
  EXPECT_EQ(t.EncodeRaw(std::string(101, 'a')), (std::vector<int64_t>{t.unk_id()}));
  EXPECT_NE(t.EncodeRaw(std::string(100, 'a')), (std::vector<int64_t>{t.unk_id()}));
  // Special tokens in the text are their ids, case-sensitively.
  EXPECT_EQ(t.EncodeRaw("[SEP]"), (std::vector<int64_t>{t.sep_id()}));
  EXPECT_NE(t.EncodeRaw("[sep]"), (std::vector<int64_t>{t.sep_id()}));
  // Truncation keeps [CLS] and [SEP]; padding is [PAD] with mask 0.
  const BertEncoding e = t.Encode("red green blue yellow", 4);
  EXPECT_EQ(e.ids, (std::vector<int64_t>{t.cls_id(), t.EncodeRaw("red")[0], t.EncodeRaw("green")[0], t.sep_id()}));
  EXPECT_EQ(e.mask, (std::vector<int64_t>{1, 1, 1, 1}));
  const BertEncoding p = t.Encode("red", 5);
  EXPECT_EQ(p.ids, (std::vector<int64_t>{t.cls_id(), t.EncodeRaw("red")[0], t.sep_id(), t.pad_id(), t.pad_id()}));
  EXPECT_EQ(p.mask, (std::vector<int64_t>{1, 1, 1, 0, 0}));
  EXPECT_EQ(t.Encode("red", 0).ids, (std::vector<int64_t>{t.cls_id(), t.sep_id()}));
  EXPECT_EQ(t.Encode("", 3).ids, (std::vector<int64_t>{t.cls_id(), t.sep_id(), t.pad_id()}));
}

TEST_F(BertTokenizerTest, BrokenUtf8IsDropped) {
  auto tok = BertTokenizer::Load(dir_ + "/lower");
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->EncodeRaw("re\xff" "d"), (*tok)->EncodeRaw("red"));
  EXPECT_EQ((*tok)->EncodeRaw("\xe4\xb8 red \xc3"), (*tok)->EncodeRaw("red"));
  EXPECT_TRUE((*tok)->EncodeRaw("\xff\xfe\xfd").empty());
  EXPECT_EQ(DecodeUtf8Lossy("a\xe4\xb8" "b"), std::u32string(U"a\uFFFDb"));
}

TEST_F(BertTokenizerTest, LoadErrors) {
  const auto expect_invalid = [](const std::string& d, const std::string& mention) {
    auto t = BertTokenizer::Load(d);
    ASSERT_FALSE(t.ok()) << d;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
    EXPECT_NE(t.status().message().find(mention), std::string::npos) << t.status();
  };
  expect_invalid(dir_ + "/nowhere", "/nowhere/vocab.txt");
  const std::string d = dir_ + "/broken";
  std::filesystem::create_directories(d);
  std::ofstream(d + "/vocab.txt") << "";
  expect_invalid(d, "vocab.txt");
  std::ofstream(d + "/vocab.txt") << "[PAD]\n[UNK]\n\xff\xfe\n";
  expect_invalid(d, "vocab.txt");
  std::ofstream(d + "/vocab.txt") << "[PAD]\n[UNK]\n[SEP]\nred\n";
  expect_invalid(d, "[CLS]");
  std::ofstream(d + "/vocab.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\nred\n";
  EXPECT_TRUE(BertTokenizer::Load(d).ok());
  std::ofstream(d + "/tokenizer_config.json") << "{not json";
  expect_invalid(d, "tokenizer_config.json");
  std::ofstream(d + "/tokenizer_config.json") << R"({"pad_token": "<pad>"})";
  expect_invalid(d, "<pad>");
  // special_tokens_map.json wins over tokenizer_config.json.
  std::ofstream(d + "/special_tokens_map.json") << R"({"pad_token": {"content": "red"}})";
  auto t = BertTokenizer::Load(d);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->pad_id(), 4);
  EXPECT_EQ((*t)->model_max_length(), std::numeric_limits<int>::max());
  EXPECT_EQ((*t)->EncodeRaw("red"), (std::vector<int64_t>{4}));
}

}  // namespace
}  // namespace ditserve::worker::tokenizers
