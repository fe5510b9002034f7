#include "worker/families/pixart/pixart_text_encoder.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <locale.h>
#include <wctype.h>

#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "worker/families/components.h"
#include "worker/models/text/t5_encoder.h"
#include "worker/tokenizers/t5_tokenizer.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::families {
namespace {

// UTF-8 → code points; an invalid byte becomes U+FFFD.
std::vector<char32_t> Decode(const std::string& s) {
  std::vector<char32_t> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = n == 1 ? c : c & (0x7F >> n);
    bool ok = true;
    for (int k = 1; k < n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) ok = false;
      cp = (cp << 6) | (d & 0x3F);
    }
    out.push_back(ok ? cp : 0xFFFD);
    i += ok ? n : 1;
  }
  return out;
}

void Append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

std::string PixArtPreprocessPrompt(const std::string& prompt) {
  // C.UTF-8 is built into glibc (>= 2.35); without it, ASCII rules.
  static const locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
  std::vector<char32_t> cps = Decode(prompt);
  const auto space = [](char32_t c) {
    return utf8 != static_cast<locale_t>(0) ? iswspace_l(static_cast<wint_t>(c), utf8) != 0
                                            : (c == ' ' || (c >= '\t' && c <= '\r'));
  };
  size_t begin = 0, end = cps.size();
  while (begin < end && space(cps[begin])) ++begin;
  while (end > begin && space(cps[end - 1])) --end;
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    char32_t c = cps[i];
    if (utf8 != static_cast<locale_t>(0)) {
      c = static_cast<char32_t>(towlower_l(static_cast<wint_t>(c), utf8));
    } else if (c >= 'A' && c <= 'Z') {
      c = c - 'A' + 'a';
    }
    Append(out, c);
  }
  return out;
}

struct PixArtTextEncoder::Impl {
  std::unique_ptr<tokenizers::T5Tokenizer> tokenizer;
  std::unique_ptr<text::T5Encoder> t5;
  int default_length = 300;
  int limit = 512;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

PixArtTextEncoder::PixArtTextEncoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PixArtTextEncoder::~PixArtTextEncoder() = default;
int PixArtTextEncoder::sequence_dim() const { return impl_->t5->config().d_model; }
int PixArtTextEncoder::default_max_sequence_length() const { return impl_->default_length; }
int PixArtTextEncoder::max_sequence_length_limit() const { return impl_->limit; }

absl::StatusOr<std::unique_ptr<PixArtTextEncoder>> PixArtTextEncoder::Load(const std::string& dir, int default_length,
                                                                           at::ScalarType dtype, c10::Device device) {
  auto impl = std::make_unique<Impl>();
  impl->dtype = dtype;
  impl->device = device;
  auto tokenizer = tokenizers::T5Tokenizer::Load(dir + "/tokenizer/spiece.model");
  if (!tokenizer.ok()) return tokenizer.status();
  impl->tokenizer = *std::move(tokenizer);
  if (auto tc = util::ReadFileToString(dir + "/tokenizer/tokenizer_config.json"); tc.ok()) {
    const nlohmann::json j = nlohmann::json::parse(*tc, nullptr, false);
    if (j.is_object() && j.contains("model_max_length") && j["model_max_length"].is_number_integer() &&
        j["model_max_length"].get<int64_t>() > 0) {
      impl->limit = static_cast<int>(std::min<int64_t>(j["model_max_length"].get<int64_t>(), 512));
    }
  }
  impl->default_length = std::min(default_length, impl->limit);
  auto t5 = LoadT5Encoder(dir, "text_encoder", dtype);
  if (!t5.ok()) return t5.status();
  impl->t5 = *std::move(t5);
  if (absl::Status s = MoveToDevice("the text encoder", device, [&] { impl->t5->module().to(device); }); !s.ok()) {
    return s;
  }
  return std::unique_ptr<PixArtTextEncoder>(new PixArtTextEncoder(std::move(impl)));
}

absl::StatusOr<TextEmbeddings> PixArtTextEncoder::Encode(const std::string& prompt, int max_sequence_length) const {
  const Impl& p = *impl_;
  at::NoGradGuard no_grad;
  const std::string text = PixArtPreprocessPrompt(prompt);
  auto tokens = p.tokenizer->EncodeWithMask(text, max_sequence_length);
  if (!tokens.ok()) return tokens.status();
  const int64_t T = static_cast<int64_t>(tokens->ids.size());
  const at::Tensor mask = at::tensor(tokens->mask, at::kLong).view({1, T});
  const at::Tensor input = at::tensor(tokens->ids, at::kLong).view({1, T}).to(p.device);
  auto out = p.t5->Forward(input, mask.to(p.device));
  if (!out.ok()) return out.status();
  TextEmbeddings e;
  e.pooled = at::zeros({1, 0}, at::TensorOptions().dtype(p.dtype).device(p.device));
  e.sequence = out->to(p.dtype);
  e.mask = mask.to(p.device, p.dtype);
  return e;
}

}  // namespace ditserve::worker::families
