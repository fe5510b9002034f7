#include "worker/tokenizers/bert_tokenizer.h"

#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace ditserve::worker::tokenizers {
namespace {

// As the tokenizers library's WordPiece.
constexpr size_t kMaxInputCharsPerWord = 100;
constexpr const char* kContinuation = "##";

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

bool IsValidUtf8(const std::string& s) {
  for (int32_t i = 0, n = static_cast<int32_t>(s.size()); i < n;) {
    UChar32 c;
    U8_NEXT(s.data(), i, n, c);
    if (c < 0) return false;
  }
  return true;
}

// The token on one vocab.txt line: trailing White Space removed (the
// tokenizers library reads vocab.txt with Rust's lines() and trim_end(),
// so "\r" and a trailing U+3000 go too).
std::string TrimEnd(const std::string& line) {
  std::u32string u = DecodeUtf8Lossy(line);
  while (!u.empty() && u_isUWhiteSpace(static_cast<UChar32>(u.back()))) u.pop_back();
  return EncodeUtf8(u);
}

// A special token given as "text" or {"content": "text", …}; "" if neither.
std::string TokenContent(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<BertTokenizer>> BertTokenizer::Load(const std::string& dir) {
  std::unique_ptr<BertTokenizer> t(new BertTokenizer());
  const std::string vocab_path = dir + "/vocab.txt";
  std::string vocab_text;
  if (!ReadFile(vocab_path, &vocab_text)) return absl::InvalidArgumentError(absl::StrCat("cannot read ", vocab_path));
  if (vocab_text.empty()) return absl::InvalidArgumentError(absl::StrCat(vocab_path, " is empty"));
  if (!IsValidUtf8(vocab_text)) return absl::InvalidArgumentError(absl::StrCat(vocab_path, " is not valid UTF-8"));
  int64_t id = 0;
  for (size_t start = 0; start < vocab_text.size(); ++id) {
    size_t end = vocab_text.find('\n', start);
    if (end == std::string::npos) end = vocab_text.size();
    t->vocab_[TrimEnd(vocab_text.substr(start, end - start))] = id;  // a repeated token keeps its last id
    start = end + 1;
  }
  if (id > std::numeric_limits<int>::max()) return absl::InvalidArgumentError(absl::StrCat(vocab_path, " is too long"));
  t->vocab_size_ = static_cast<int>(id);

  // Defaults of transformers' BertTokenizer; tokenizer_config.json, then
  // special_tokens_map.json, override them.
  std::string cls = "[CLS]", sep = "[SEP]", pad = "[PAD]", unk = "[UNK]", mask = "[MASK]";
  bool lowercase = true, chinese = true;
  nlohmann::json strip_accents = nullptr;
  t->model_max_length_ = std::numeric_limits<int>::max();
  std::vector<std::pair<std::string, int64_t>> added;
  for (const char* name : {"/tokenizer_config.json", "/special_tokens_map.json"}) {
    const std::string path = dir + name;
    std::string text;
    if (!ReadFile(path, &text)) continue;  // both optional
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
    for (auto [key, out] : {std::pair{"cls_token", &cls}, {"sep_token", &sep}, {"pad_token", &pad},
                            {"unk_token", &unk}, {"mask_token", &mask}}) {
      if (!j.contains(key) || j[key].is_null()) continue;
      *out = TokenContent(j[key]);
      if (out->empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, " is not a token"));
    }
    if (std::string(name) != "/tokenizer_config.json") continue;
    const auto boolean = [&](const char* key, bool* out) -> absl::Status {
      if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
      if (!j[key].is_boolean()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", key, " must be true or false"));
      *out = j[key].get<bool>();
      return absl::OkStatus();
    };
    if (absl::Status s = boolean("do_lower_case", &lowercase); !s.ok()) return s;
    if (absl::Status s = boolean("tokenize_chinese_chars", &chinese); !s.ok()) return s;
    if (j.contains("strip_accents")) {
      strip_accents = j["strip_accents"];
      if (!strip_accents.is_null() && !strip_accents.is_boolean()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": strip_accents must be true, false or null"));
      }
    }
    if (j.contains("model_max_length") && j["model_max_length"].is_number()) {
      const double m = j["model_max_length"].get<double>();
      t->model_max_length_ = m >= 1 && m < std::numeric_limits<int>::max() ? static_cast<int>(m)
                                                                          : std::numeric_limits<int>::max();
    }
    if (j.contains("added_tokens_decoder")) {
      if (!j["added_tokens_decoder"].is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": added_tokens_decoder is not an object"));
      }
      for (const auto& [key, token] : j["added_tokens_decoder"].items()) {
        const std::string content = TokenContent(token);
        int64_t added_id = 0;
        if (content.empty() || !absl::SimpleAtoi(key, &added_id) || added_id < 0) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": bad added_tokens_decoder entry '", key, "'"));
        }
        added.emplace_back(content, added_id);
      }
    }
  }
  t->options_.lowercase = lowercase;
  t->options_.strip_accents = strip_accents.is_null() ? lowercase : strip_accents.get<bool>();
  t->options_.handle_chinese_chars = chinese;

  std::map<std::string, int64_t> specials;
  for (auto [text, out] : {std::pair{&cls, &t->cls_}, {&sep, &t->sep_}, {&pad, &t->pad_}, {&unk, &t->unk_}}) {
    auto it = t->vocab_.find(*text);
    if (it == t->vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": special token '", *text, "' is not in the vocabulary"));
    }
    *out = it->second;
    specials[*text] = it->second;
  }
  // [MASK] is matched in prompts when the vocabulary has it.
  if (auto it = t->vocab_.find(mask); it != t->vocab_.end()) specials[mask] = it->second;
  for (const auto& [text, added_id] : added) specials[text] = added_id;
  for (const auto& [text, special_id] : specials) t->specials_.emplace_back(DecodeUtf8Lossy(text), special_id);
  return t;
}

void BertTokenizer::WordPiece(const std::u32string& word, std::vector<int64_t>& ids) const {
  if (word.size() > kMaxInputCharsPerWord) {
    ids.push_back(unk_);
    return;
  }
  std::vector<int64_t> pieces;
  for (size_t start = 0; start < word.size();) {
    size_t end = word.size();
    int64_t found = -1;
    for (; end > start; --end) {
      std::string piece = start > 0 ? kContinuation : "";
      piece += EncodeUtf8(word.substr(start, end - start));
      if (auto it = vocab_.find(piece); it != vocab_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {
      ids.push_back(unk_);
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  ids.insert(ids.end(), pieces.begin(), pieces.end());
}

std::vector<int64_t> BertTokenizer::EncodeRaw(const std::string& utf8) const {
  const std::u32string text = DecodeUtf8Lossy(utf8);
  std::vector<int64_t> ids;
  const auto encode_piece = [&](size_t from, size_t to) {
    if (to <= from) return;
    for (const std::u32string& word : BertPreTokenize(text.substr(from, to - from), options_)) WordPiece(word, ids);
  };
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const std::pair<std::u32string, int64_t>* match = nullptr;
    for (const auto& special : specials_) {
      if (special.first.size() > (match ? match->first.size() : 0) &&
          text.compare(i, special.first.size(), special.first) == 0) {
        match = &special;
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    encode_piece(start, i);
    ids.push_back(match->second);
    i += match->first.size();
    start = i;
  }
  encode_piece(start, text.size());
  return ids;
}

BertEncoding BertTokenizer::Encode(const std::string& utf8, int max_length) const {
  const size_t length = static_cast<size_t>(std::max(max_length, 2));
  const std::vector<int64_t> raw = EncodeRaw(utf8);
  BertEncoding out;
  out.ids.reserve(length);
  out.ids.push_back(cls_);
  out.ids.insert(out.ids.end(), raw.begin(), raw.begin() + std::min(raw.size(), length - 2));
  out.ids.push_back(sep_);
  out.mask.assign(out.ids.size(), 1);
  out.ids.resize(length, pad_);
  out.mask.resize(length, 0);
  return out;
}

}  // namespace ditserve::worker::tokenizers
