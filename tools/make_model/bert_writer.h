#pragma once

// Writers for the BERT text side of a HunyuanDiT directory: tokenizer/ (a
// WordPiece vocabulary learned from CaptionCorpus()) and text_encoder/ (a
// BertModel with seeded random weights), in the layout transformers'
// BertTokenizer.from_pretrained and BertModel.from_pretrained read.
// Deterministic: the same arguments and generator state give byte-identical
// files.

#include <string>

#include <ATen/core/Generator.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/models/text/bert_model.h"

namespace ditserve::tools::make_model {

// The ids of the written vocabulary's special tokens: those of the real
// bert-base-chinese / HunyuanDiT vocabulary ([unused1]…[unused99] fill
// ids 1-99).
inline constexpr int kBertPadId = 0;
inline constexpr int kBertUnkId = 100;
inline constexpr int kBertClsId = 101;
inline constexpr int kBertSepId = 102;
inline constexpr int kBertMaskId = 103;

// Writes `subdir`/vocab.txt, tokenizer_config.json (BertTokenizer,
// do_lower_case true, strip_accents null, tokenize_chinese_chars true,
// `model_max_length`, the special tokens and added_tokens_decoder as
// transformers 4 writes them) and special_tokens_map.json.
//
// The vocabulary: the special tokens at the ids above; every printable
// ASCII character, the Latin-1 letters, common ASCII-free punctuation
// (“ ” ‘ ’ — – … ， 。 、 「 」 …), fullwidth digits and letters, kana,
// some Hangul syllables and the conjoining jamo (what NFD makes of Hangul
// when accents are stripped), a few hundred common CJK ideographs and some
// emoji, each alone and (letters, digits, kana, Hangul, jamo, ideographs,
// emoji) as a "##" continuation; every word of CaptionCorpus(); then word
// prefixes and "##" suffixes of the corpus words, the most frequent first
// (ties in byte order), until `vocab_target` entries. The fixed part is
// always written whole, so the result may exceed vocab_target; it may fall
// short when the corpus has no more pieces. Returns the vocabulary size
// (vocab.txt's line count, what the text encoder's vocab_size must be at
// least). PERMISSION_DENIED naming a path that cannot be written.
absl::StatusOr<int> WriteBertTokenizer(const std::string& subdir, int vocab_target, int model_max_length);

// Writes `subdir`/model.safetensors (every BertModel parameter plus
// pooler.dense, in `dtype`: biases 0, LayerNorm weights 1, the rest N(0,
// 0.02) drawn from `generator` in parameter order, the pooler last) and
// config.json (architectures ["BertModel"], model_type "bert", the
// config's sizes, absolute positions): BertModel.from_pretrained loads it
// with no missing or unexpected weights. INVALID_ARGUMENT for a config
// worker::text::BertModel refuses.
absl::Status WriteBertTextEncoder(const std::string& subdir, const worker::text::BertConfig& config,
                                  at::Generator& generator, at::ScalarType dtype);

}  // namespace ditserve::tools::make_model
