#pragma once

// The BERT WordPiece tokenizer (tokenizer/ of a HunyuanDiT directory), as
// transformers 5's BertTokenizer (the class HunyuanDiTPipeline loads for
// "tokenizer": the tokenizers library's BertNormalizer, BertPreTokenizer
// and WordPiece behind it):
//   - special tokens ([PAD], [UNK], [CLS], [SEP], [MASK] and any other
//     added_tokens_decoder entry) are split out of the raw text first,
//     case-sensitively, leftmost and longest first, and become their ids;
//   - each piece between them is normalised and split into words
//     (bert_normalizer.h);
//   - WordPiece: each word is split greedily into the longest vocabulary
//     entries, the first as is and the rest with the "##" prefix; a word
//     longer than 100 code points, or with a rest that no entry starts, is
//     one [UNK].
//
// Invalid UTF-8 never fails: each ill-formed sequence is read as U+FFFD,
// which the normaliser drops (so it behaves as if absent, like Python's
// bytes.decode("utf-8", "replace") followed by the tokenizer).
//
// Not read: tokenizer.json (transformers prefers it to vocab.txt when a
// directory has one), never_split and do_basic_tokenize (ignored by
// transformers 5's BertTokenizer too).
//
// Immutable after Load; thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/tokenizers/bert_normalizer.h"

namespace ditserve::worker::tokenizers {

struct BertEncoding {
  std::vector<int64_t> ids;
  std::vector<int64_t> mask;  // 1 for a real token ([CLS] and [SEP] included), 0 for padding
};

class BertTokenizer {
 public:
  // `dir`: a tokenizer/ directory holding vocab.txt (one token per line,
  // id = line index, "\n" ends a line; a repeated token keeps its last id,
  // as transformers' load_vocab) and, optionally, tokenizer_config.json
  // (do_lower_case (default true), strip_accents (null: as do_lower_case),
  // tokenize_chinese_chars (default true), model_max_length, the special
  // tokens cls/sep/pad/unk/mask_token as strings or {"content": …}
  // objects, added_tokens_decoder) and special_tokens_map.json (its
  // special tokens win over tokenizer_config.json's, as in transformers).
  // INVALID_ARGUMENT naming the file when vocab.txt is missing, empty or
  // not UTF-8, a JSON file is malformed, or [CLS], [SEP], [PAD] or [UNK]
  // (or the tokens the configs name instead) is not in vocab.txt.
  static absl::StatusOr<std::unique_ptr<BertTokenizer>> Load(const std::string& dir);

  // Token ids of `utf8` without [CLS]/[SEP], truncation or padding.
  std::vector<int64_t> EncodeRaw(const std::string& utf8) const;
  // [CLS] ids… [SEP], the ids truncated so that the whole is at most
  // max_length (as transformers' truncation=True: [SEP] kept), then padded
  // with [PAD] (mask 0) to exactly max_length. max_length below 2 counts as
  // 2.
  BertEncoding Encode(const std::string& utf8, int max_length) const;

  // Lines in vocab.txt (one more than the largest vocabulary id).
  int vocab_size() const { return vocab_size_; }
  // tokenizer_config.json's model_max_length; INT_MAX when absent (no
  // limit, as transformers' VERY_LARGE_INTEGER).
  int model_max_length() const { return model_max_length_; }
  int64_t pad_id() const { return pad_; }
  int64_t cls_id() const { return cls_; }
  int64_t sep_id() const { return sep_; }
  int64_t unk_id() const { return unk_; }
  const BertNormalizerOptions& normalizer_options() const { return options_; }

 private:
  BertTokenizer() = default;
  // Appends the WordPiece ids of one pre-tokenised word.
  void WordPiece(const std::u32string& word, std::vector<int64_t>& ids) const;

  std::unordered_map<std::string, int64_t> vocab_;              // UTF-8 token -> id
  std::vector<std::pair<std::u32string, int64_t>> specials_;    // matched in raw text
  BertNormalizerOptions options_;
  int vocab_size_ = 0;
  int model_max_length_ = 0;
  int64_t pad_ = 0, cls_ = 0, sep_ = 0, unk_ = 0;
};

}  // namespace ditserve::worker::tokenizers
