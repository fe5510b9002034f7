#pragma once

// The CLIP tokenizer (tokenizer/ of a Flux directory, tokenizer/ and
// tokenizer_2/ of a Stable Diffusion 3 one): byte-level BPE read from
// vocab.json and merges.txt, as transformers' CLIPTokenizer does it: special
// tokens split out of the raw text; then NFC, whitespace runs to one space,
// lowercase; split into contractions, letter runs, single digits and
// other-symbol runs; bytes mapped to printable code points; BPE with "</w>"
// ending each word; <|startoftext|> … <|endoftext|>, truncated and padded
// to max_length.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ditserve::worker::tokenizers {

// GPT-2's reversible byte -> printable code point table: entry b is the
// UTF-8 of the symbol standing for byte b in vocab.json and merges.txt.
std::vector<std::string> ByteLevelSymbols();

class ClipTokenizer {
 public:
  // `dir` holds vocab.json and merges.txt; tokenizer_config.json and
  // special_tokens_map.json (optional; the latter wins, as in transformers)
  // may name the bos/eos/pad/unk tokens (defaults: <|startoftext|>,
  // <|endoftext|> for the rest; OpenCLIP-bigG's tokenizer_2 of SD3 pads
  // with "!", id 0), and tokenizer_config.json's added_tokens_decoder more
  // special tokens. Every special token is matched as a whole in a prompt
  // ("!" in "wow!" is the pad id then). NOT_FOUND / INVALID_ARGUMENT on
  // missing or malformed files.
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> Load(const std::string& dir);

  // Token ids without special tokens, truncation or padding. Invalid UTF-8
  // is INVALID_ARGUMENT.
  absl::StatusOr<std::vector<int64_t>> EncodeRaw(const std::string& text) const;
  // [bos, tokens…, eos] truncated to max_length (eos kept) and padded with
  // the pad id to exactly max_length.
  absl::StatusOr<std::vector<int64_t>> Encode(const std::string& text, int max_length = 77) const;

  int64_t bos_id() const { return bos_; }
  int64_t eos_id() const { return eos_; }
  int64_t pad_id() const { return pad_; }

 private:
  ClipTokenizer() = default;
  std::vector<std::string> Bpe(const std::string& word) const;
  // Appends the ids of text holding no special token.
  absl::Status EncodeSegment(const std::string& text, std::vector<int64_t>& ids) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::map<std::pair<std::string, std::string>, int> ranks_;
  std::vector<std::string> byte_to_unicode_;  // UTF-8 of the code point for each byte
  std::map<std::string, int64_t> specials_;   // special token text -> id
  int64_t bos_ = 0, eos_ = 0, pad_ = 0, unk_ = 0;
};

}  // namespace ditserve::worker::tokenizers
