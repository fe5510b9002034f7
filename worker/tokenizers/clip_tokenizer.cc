#include "worker/tokenizers/clip_tokenizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ditserve::worker::tokenizers {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Utf8(UChar32 c) {
  std::string out;
  icu::UnicodeString(c).toUTF8String(out);
  return out;
}

}  // namespace

std::vector<std::string> ByteLevelSymbols() {
  std::vector<int> printable;
  for (int b = '!'; b <= '~'; ++b) printable.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) printable.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) printable.push_back(b);
  std::vector<std::string> table(256);
  std::vector<bool> is_printable(256, false);
  for (int b : printable) is_printable[b] = true;
  int next = 256;
  for (int b = 0; b < 256; ++b) table[b] = Utf8(is_printable[b] ? b : next++);
  return table;
}

namespace {

bool IsLetter(UChar32 c) { return u_isalpha(c); }  // \p{L}
bool IsNumber(UChar32 c) {
  const int8_t t = u_charType(c);
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}
bool IsSpace(UChar32 c) { return u_isUWhiteSpace(c); }

}  // namespace

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::Load(const std::string& dir) {
  std::unique_ptr<ClipTokenizer> t(new ClipTokenizer());
  auto vocab_text = ReadFile(dir + "/vocab.json");
  if (!vocab_text.ok()) return vocab_text.status();
  const nlohmann::json vocab = nlohmann::json::parse(*vocab_text, nullptr, false);
  if (vocab.is_discarded() || !vocab.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/vocab.json is not a JSON object"));
  }
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/vocab.json: id of '", it.key(), "' is not an integer"));
    }
    t->vocab_[it.key()] = it.value().get<int64_t>();
  }
  auto merges = ReadFile(dir + "/merges.txt");
  if (!merges.ok()) return merges.status();
  int rank = 0;
  for (absl::string_view line : absl::StrSplit(*merges, '\n', absl::SkipEmpty())) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (rank == 0 && line.substr(0, 8) == "#version")) continue;
    std::vector<std::string> pair = absl::StrSplit(line, ' ');
    if (pair.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/merges.txt: bad line '", line, "'"));
    }
    t->ranks_.emplace(std::make_pair(pair[0], pair[1]), rank++);
  }
  // As transformers: tokenizer_config.json names the special tokens,
  // special_tokens_map.json overrides it, and added_tokens_decoder adds
  // more (OpenCLIP-bigG's "!" pad, id 0).
  std::string bos = "<|startoftext|>", eos = "<|endoftext|>", pad = eos, unk = eos;
  std::vector<std::pair<std::string, int64_t>> added;
  for (const char* file : {"/tokenizer_config.json", "/special_tokens_map.json"}) {
    auto config_text = ReadFile(dir + file);
    if (!config_text.ok()) continue;
    const nlohmann::json config = nlohmann::json::parse(*config_text, nullptr, false);
    if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(dir, file, " is not a JSON object"));
    const auto content = [](const nlohmann::json& v, std::string* out) {
      if (v.is_string()) *out = v.get<std::string>();
      if (v.is_object() && v.contains("content") && v["content"].is_string()) *out = v["content"].get<std::string>();
    };
    for (auto [key, out] : {std::pair{"bos_token", &bos}, {"eos_token", &eos}, {"pad_token", &pad}, {"unk_token", &unk}}) {
      if (config.contains(key)) content(config[key], out);
    }
    if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
      for (const auto& [key, token] : config["added_tokens_decoder"].items()) {
        std::string text;
        content(token, &text);
        int64_t id = 0;
        if (text.empty() || !absl::SimpleAtoi(key, &id) || id < 0) {
          return absl::InvalidArgumentError(absl::StrCat(dir, file, ": bad added_tokens_decoder entry '", key, "'"));
        }
        added.emplace_back(text, id);
      }
    }
  }
  for (auto [text, id] : {std::pair{&bos, &t->bos_}, {&eos, &t->eos_}, {&pad, &t->pad_}, {&unk, &t->unk_}}) {
    auto it = t->vocab_.find(*text);
    if (it == t->vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": special token '", *text, "' is not in vocab.json"));
    }
    *id = it->second;
    t->specials_[*text] = it->second;
  }
  for (const auto& [text, id] : added) t->specials_[text] = id;
  t->byte_to_unicode_ = ByteLevelSymbols();
  return t;
}

std::vector<std::string> ClipTokenizer::Bpe(const std::string& word) const {
  // Symbols: the word's code points (UTF-8 each), "</w>" on the last.
  std::vector<std::string> symbols;
  int32_t i = 0;
  const int32_t n = static_cast<int32_t>(word.size());
  while (i < n) {
    const int32_t start = i;
    UChar32 c;
    U8_NEXT(word.data(), i, n, c);
    symbols.push_back(word.substr(start, i - start));
  }
  if (symbols.empty()) return symbols;
  symbols.back() += "</w>";
  while (symbols.size() > 1) {
    int best = std::numeric_limits<int>::max();
    for (size_t k = 0; k + 1 < symbols.size(); ++k) {
      auto it = ranks_.find({symbols[k], symbols[k + 1]});
      if (it != ranks_.end() && it->second < best) best = it->second;
    }
    if (best == std::numeric_limits<int>::max()) break;
    std::vector<std::string> merged;
    for (size_t k = 0; k < symbols.size(); ++k) {
      if (k + 1 < symbols.size()) {
        auto it = ranks_.find({symbols[k], symbols[k + 1]});
        if (it != ranks_.end() && it->second == best) {
          merged.push_back(symbols[k] + symbols[k + 1]);
          ++k;
          continue;
        }
      }
      merged.push_back(symbols[k]);
    }
    symbols.swap(merged);
  }
  return symbols;
}

absl::Status ClipTokenizer::EncodeSegment(const std::string& text, std::vector<int64_t>& ids) const {
  // Normalise: NFC, whitespace runs -> " ", lowercase.
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(err);
  if (U_FAILURE(err)) return absl::InternalError("ICU NFC normaliser unavailable");
  icu::UnicodeString u = nfc->normalize(icu::UnicodeString::fromUTF8(text), err);
  if (U_FAILURE(err)) return absl::InternalError("ICU normalisation failed");
  icu::UnicodeString spaced;
  for (int32_t i = 0; i < u.length();) {
    const UChar32 c = u.char32At(i);
    i += U16_LENGTH(c);
    if (IsSpace(c)) {
      while (i < u.length() && IsSpace(u.char32At(i))) i += U16_LENGTH(u.char32At(i));
      spaced.append(static_cast<UChar>(' '));
    } else {
      // Lowercase one code point at a time, without context (as the
      // tokenizers library does: no final-sigma rule).
      icu::UnicodeString lower(c);
      lower.toLower(icu::Locale::getRoot());
      spaced.append(lower);
    }
  }
  // Pre-tokenise as the CLIP regex (leftmost, first alternative wins).
  std::vector<std::string> pieces;
  const auto at = [&](int32_t i) { return spaced.char32At(i); };
  const int32_t len = spaced.length();
  int32_t i = 0;
  while (i < len) {
    const UChar32 c = at(i);
    if (IsSpace(c)) {
      i += U16_LENGTH(c);
      continue;
    }
    bool matched = false;
    for (const char* s : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}) {
      const icu::UnicodeString lit = icu::UnicodeString::fromUTF8(s);
      if (spaced.compare(i, lit.length(), lit) == 0) {
        std::string piece;
        lit.toUTF8String(piece);
        pieces.push_back(piece);
        i += lit.length();
        matched = true;
        break;
      }
    }
    if (matched) continue;
    int32_t j = i;
    if (IsLetter(c)) {
      while (j < len && IsLetter(at(j))) j += U16_LENGTH(at(j));
    } else if (IsNumber(c)) {
      j += U16_LENGTH(c);
    } else {
      while (j < len && !IsSpace(at(j)) && !IsLetter(at(j)) && !IsNumber(at(j))) j += U16_LENGTH(at(j));
    }
    std::string piece;
    spaced.tempSubString(i, j - i).toUTF8String(piece);
    pieces.push_back(piece);
    i = j;
  }
  for (const std::string& piece : pieces) {
    std::string mapped;
    for (unsigned char b : piece) mapped += byte_to_unicode_[b];
    for (const std::string& symbol : Bpe(mapped)) {
      auto v = vocab_.find(symbol);
      ids.push_back(v == vocab_.end() ? unk_ : v->second);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> ClipTokenizer::EncodeRaw(const std::string& text) const {
  // Validate UTF-8.
  for (int32_t i = 0, n = static_cast<int32_t>(text.size()); i < n;) {
    UChar32 c;
    U8_NEXT(text.data(), i, n, c);
    if (c < 0) return absl::InvalidArgumentError("prompt is not valid UTF-8");
  }
  // Special tokens are split out of the raw text first (case-sensitive,
  // leftmost, longest first, as the tokenizers library's added tokens),
  // the text between them is tokenised on its own.
  std::vector<int64_t> ids;
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const std::pair<const std::string, int64_t>* match = nullptr;
    for (const auto& special : specials_) {
      if (text.compare(i, special.first.size(), special.first) == 0 &&
          (match == nullptr || special.first.size() > match->first.size())) {
        match = &special;
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    if (absl::Status s = EncodeSegment(text.substr(start, i - start), ids); !s.ok()) return s;
    ids.push_back(match->second);
    i += match->first.size();
    start = i;
  }
  if (absl::Status s = EncodeSegment(text.substr(start), ids); !s.ok()) return s;
  return ids;
}

absl::StatusOr<std::vector<int64_t>> ClipTokenizer::Encode(const std::string& text, int max_length) const {
  if (max_length < 2) return absl::InvalidArgumentError("max_length must be at least 2");
  auto raw = EncodeRaw(text);
  if (!raw.ok()) return raw.status();
  std::vector<int64_t> ids = {bos_};
  for (int64_t id : *raw) {
    if (static_cast<int>(ids.size()) == max_length - 1) break;
    ids.push_back(id);
  }
  ids.push_back(eos_);
  while (static_cast<int>(ids.size()) < max_length) ids.push_back(pad_);
  return ids;
}

}  // namespace ditserve::worker::tokenizers
