#include "worker/tokenizers/bert_normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace ditserve::worker::tokenizers {
namespace {

struct Range {
  char32_t lo, hi;  // inclusive
};

template <size_t N>
bool InRanges(const Range (&ranges)[N], char32_t c) {
  const Range* it = std::upper_bound(std::begin(ranges), std::end(ranges), c,
                                     [](char32_t v, const Range& r) { return v < r.lo; });
  return it != std::begin(ranges) && c <= (it - 1)->hi;
}

bool IsWhitespace(char32_t c) { return c == '\t' || c == '\n' || c == '\r' || u_isUWhiteSpace(static_cast<UChar32>(c)); }

// The Unicode version a code point was assigned in, as major * 100 + minor.
int Age(char32_t c) {
  UVersionInfo v;
  u_charAge(static_cast<UChar32>(c), v);
  return v[0] * 100 + v[1];
}

// The tokenizers library (0.23) classifies characters with the
// unicode_categories crate's tables, which are Unicode 8.0: a code point
// assigned later is unassigned (Cn) there, and six older ones have since
// changed category. ICU (72 here) has current data; this undoes both
// differences. Checked for every code point by bert_tokenizer_test.
constexpr int kCategoryTablesAge = 800;
int8_t TokenizersCategory(char32_t c) {
  switch (c) {
    case 0x166D: return U_OTHER_PUNCTUATION;   // CANADIAN SYLLABICS CHI SIGN (So since 12.0)
    case 0x111C9: return U_OTHER_PUNCTUATION;  // SHARADA SANDHI MARK (Mn since 13.0)
    case 0x1734: return U_NON_SPACING_MARK;    // HANUNOO SIGN PAMUDPOD (Mc since 14.0)
    case 0x1885:                               // MONGOLIAN LETTER ALI GALI BALUDA,
    case 0x1886: return U_OTHER_LETTER;        //   … THREE BALUDA (Mn since 9.0)
    case 0xA9BD: return U_COMBINING_SPACING_MARK;  // JAVANESE CONSONANT SIGN KERET (Mn since 12.0)
    default: break;
  }
  if (Age(c) > kCategoryTablesAge) return U_UNASSIGNED;
  return u_charType(static_cast<UChar32>(c));
}

bool IsControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const int8_t t = TokenizersCategory(c);
  return t == U_CONTROL_CHAR || t == U_FORMAT_CHAR || t == U_PRIVATE_USE_CHAR;
}

bool IsNonspacingMark(char32_t c) { return TokenizersCategory(c) == U_NON_SPACING_MARK; }

// Its NFD (unicode-normalization-alignments) has Unicode 9.0 data: later
// code points neither decompose nor reorder (combining class 0).
constexpr int kNormalizationTablesAge = 900;

// Lowercase mappings newer than ICU 72's Unicode 15.0 that the tokenizers
// library's Rust standard library (Unicode 16/17) has: single code points.
struct LowerOverride {
  char32_t lo, hi, first_lower;  // lo..hi map to first_lower + (c - lo)
};
constexpr LowerOverride kLowerOverrides[] = {
    {0x1C89, 0x1C89, 0x1C8A}, {0xA7CB, 0xA7CB, 0x0264}, {0xA7CC, 0xA7CC, 0xA7CD}, {0xA7CE, 0xA7CE, 0xA7CF},
    {0xA7D2, 0xA7D2, 0xA7D3}, {0xA7D4, 0xA7D4, 0xA7D5}, {0xA7DA, 0xA7DA, 0xA7DB}, {0xA7DC, 0xA7DC, 0x019B},
    {0x10D50, 0x10D65, 0x10D70}, {0x16EA0, 0x16EB8, 0x16EBB},
};

void AppendLower(char32_t c, std::u32string& out) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    return;
  }
  for (const LowerOverride& o : kLowerOverrides) {
    if (c >= o.lo && c <= o.hi) {
      out.push_back(o.first_lower + (c - o.lo));
      return;
    }
  }
  // Full lowercase mapping of the code point alone (root locale; a lone
  // code point has no context, so no final sigma).
  UChar src[2], dst[8];
  int32_t n = 0;
  U16_APPEND_UNSAFE(src, n, static_cast<UChar32>(c));
  UErrorCode err = U_ZERO_ERROR;
  const int32_t m = u_strToLower(dst, 8, src, n, "", &err);
  if (U_FAILURE(err)) {
    out.push_back(c);
    return;
  }
  for (int32_t i = 0; i < m;) {
    UChar32 d;
    U16_NEXT(dst, i, m, d);
    out.push_back(static_cast<char32_t>(d));
  }
}

// Appends the NFD of `text` (holding no code point newer than the
// normalisation tables).
void AppendNfd(const icu::Normalizer2& nfd, const std::u32string& text, std::u32string& out) {
  if (text.empty()) return;
  icu::UnicodeString u;
  for (char32_t c : text) u.append(static_cast<UChar32>(c));
  UErrorCode err = U_ZERO_ERROR;
  const icu::UnicodeString d = nfd.normalize(u, err);
  if (U_FAILURE(err)) {
    out += text;
    return;
  }
  for (int32_t i = 0; i < d.length();) {
    const UChar32 c = d.char32At(i);
    out.push_back(static_cast<char32_t>(c));
    i += U16_LENGTH(c);
  }
}

// NFD as the tokenizers library: code points newer than its tables stay
// as they are and split the text (as starters, nothing reorders across).
std::u32string Nfd(const std::u32string& text) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(err);
  if (U_FAILURE(err)) return text;
  std::u32string out, segment;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c >= 0x80 && Age(c) > kNormalizationTablesAge) {
      AppendNfd(*nfd, segment, out);
      segment.clear();
      out.push_back(c);
    } else {
      segment.push_back(c);
    }
  }
  AppendNfd(*nfd, segment, out);
  return out;
}

}  // namespace

std::u32string DecodeUtf8Lossy(const std::string& utf8) {
  std::u32string out;
  out.reserve(utf8.size());
  const int32_t n = static_cast<int32_t>(utf8.size());
  for (int32_t i = 0; i < n;) {
    UChar32 c;
    U8_NEXT(utf8.data(), i, n, c);
    out.push_back(c < 0 ? U'\uFFFD' : static_cast<char32_t>(c));
  }
  return out;
}

std::string EncodeUtf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    char buf[4];
    int32_t n = 0;
    UBool error = false;
    U8_APPEND(buf, n, 4, static_cast<UChar32>(c), error);
    if (!error) out.append(buf, n);
  }
  return out;
}

bool IsBertChineseChar(char32_t c) {
  static constexpr Range kBlocks[] = {
      {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xF900, 0xFAFF}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B73F},
      {0x2B740, 0x2B81F}, {0x2B920, 0x2CEAF}, {0x2F800, 0x2FA1F},
  };
  return InRanges(kBlocks, c);
}

bool IsBertPunctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  if (c < 0x80) return false;
  const int8_t t = TokenizersCategory(c);
  return t == U_CONNECTOR_PUNCTUATION || t == U_DASH_PUNCTUATION || t == U_START_PUNCTUATION ||
         t == U_END_PUNCTUATION || t == U_INITIAL_PUNCTUATION || t == U_FINAL_PUNCTUATION ||
         t == U_OTHER_PUNCTUATION;
}

std::u32string BertNormalize(const std::u32string& text, const BertNormalizerOptions& options) {
  std::u32string cleaned;
  cleaned.reserve(text.size());
  for (char32_t c : text) {
    if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
    if (IsWhitespace(c)) {
      cleaned.push_back(U' ');
    } else if (options.handle_chinese_chars && IsBertChineseChar(c)) {
      cleaned.push_back(U' ');
      cleaned.push_back(c);
      cleaned.push_back(U' ');
    } else {
      cleaned.push_back(c);
    }
  }
  if (options.strip_accents) {
    std::u32string stripped;
    for (char32_t c : Nfd(cleaned)) {
      if (!IsNonspacingMark(c)) stripped.push_back(c);
    }
    cleaned.swap(stripped);
  }
  if (!options.lowercase) return cleaned;
  std::u32string lower;
  lower.reserve(cleaned.size());
  for (char32_t c : cleaned) AppendLower(c, lower);
  return lower;
}

std::vector<std::u32string> BertPreTokenize(const std::u32string& text, const BertNormalizerOptions& options) {
  std::vector<std::u32string> words;
  std::u32string word;
  const auto flush = [&] {
    if (!word.empty()) words.push_back(std::move(word));
    word.clear();
  };
  for (char32_t c : BertNormalize(text, options)) {
    if (IsWhitespace(c)) {
      flush();
    } else if (IsBertPunctuation(c)) {
      flush();
      words.push_back(std::u32string(1, c));
    } else {
      word.push_back(c);
    }
  }
  flush();
  return words;
}

}  // namespace ditserve::worker::tokenizers
