#pragma once

// The text side of a BERT tokenizer before WordPiece: the normaliser and
// pre-tokeniser of transformers' BertTokenizer (transformers 5: the
// tokenizers library's BertNormalizer and BertPreTokenizer), applied to one
// piece of text that holds no special token.
//
//   1. clean: U+0000, U+FFFD and control characters (general category Cc,
//      Cf or Co, except tab, newline and carriage return) are dropped; White
//      Space characters (and tab, newline, carriage return) become a space;
//   2. CJK ideographs (the code-point blocks of BERT's _is_chinese_char)
//      get a space on either side, when handle_chinese_chars;
//   3. when strip_accents: canonical decomposition (NFD) of the whole text,
//      then every non-spacing mark (Mn) is dropped;
//   4. when lowercase: each code point is replaced by its full lowercase
//      mapping, without context (no final-sigma rule: "ΣΑΣ" -> "σασ", as the
//      tokenizers library and unlike Python's str.lower);
//   5. split at White Space (dropped) and around punctuation (ASCII
//      33-47, 58-64, 91-96, 123-126 and general category P*), each
//      punctuation character a word of its own.
//
// The Unicode data is the tokenizers library's (0.23), reproduced from
// ICU: its general categories (steps 1, 3 and 5) are Unicode 8.0's (code
// points assigned later count as unassigned: kept, not punctuation, not
// marks), its NFD is Unicode 9.0's, its White Space and lowercase mappings
// are current (Rust's standard library). bert_tokenizer_test checks every
// code point against the installed tokenizers library. Pure functions;
// thread-safe.

#include <string>
#include <vector>

namespace ditserve::worker::tokenizers {

struct BertNormalizerOptions {
  bool lowercase = true;
  // tokenizer_config.json's strip_accents; null there means "as lowercase".
  bool strip_accents = true;
  bool handle_chinese_chars = true;
};

// Decodes UTF-8, replacing every ill-formed sequence (a maximal invalid
// subpart, as ICU's U8_NEXT) with U+FFFD: since cleaning drops U+FFFD, an
// invalid byte sequence simply vanishes (as with Python's
// bytes.decode("utf-8", "replace") before the tokenizer).
std::u32string DecodeUtf8Lossy(const std::string& utf8);
std::string EncodeUtf8(const std::u32string& text);

// Steps 1-4: the normalised text.
std::u32string BertNormalize(const std::u32string& text, const BertNormalizerOptions& options);
// Steps 1-5: the words of `text` (none empty), in order.
std::vector<std::u32string> BertPreTokenize(const std::u32string& text, const BertNormalizerOptions& options);

// True for the code points of step 2 (BERT's CJK ideograph blocks as the
// tokenizers library lists them: its Extension E block starts at U+2B920,
// where transformers' Python BasicTokenizer starts it at U+2B820).
bool IsBertChineseChar(char32_t c);
// Step 5's punctuation.
bool IsBertPunctuation(char32_t c);

}  // namespace ditserve::worker::tokenizers
