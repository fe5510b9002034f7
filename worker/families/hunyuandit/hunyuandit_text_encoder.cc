#include "worker/families/hunyuandit/hunyuandit_text_encoder.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "worker/families/components.h"
#include "worker/models/hunyuandit/hunyuandit_transformer.h"
#include "worker/models/text/bert_model.h"
#include "worker/models/text/t5_encoder.h"
#include "worker/tokenizers/bert_tokenizer.h"
#include "worker/tokenizers/t5_tokenizer.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::families {

struct HunyuanDiTTextEncoder::Impl {
  hunyuandit::HunyuanDiTConfig config;
  std::unique_ptr<tokenizers::BertTokenizer> bert_tokenizer;
  std::unique_ptr<text::BertModel> bert;
  std::unique_ptr<tokenizers::T5Tokenizer> t5_tokenizer;
  std::unique_ptr<text::T5Encoder> t5;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

HunyuanDiTTextEncoder::HunyuanDiTTextEncoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HunyuanDiTTextEncoder::~HunyuanDiTTextEncoder() = default;
int HunyuanDiTTextEncoder::sequence_dim() const { return static_cast<int>(hunyuandit::HunyuanTextDim(impl_->config)); }
int HunyuanDiTTextEncoder::default_max_sequence_length() const { return impl_->config.text_len_t5; }
int HunyuanDiTTextEncoder::max_sequence_length_limit() const { return impl_->config.text_len_t5; }
int HunyuanDiTTextEncoder::SequenceTokens(int /*max_sequence_length*/) const { return impl_->config.text_tokens(); }

absl::StatusOr<std::unique_ptr<HunyuanDiTTextEncoder>> HunyuanDiTTextEncoder::Load(
    const std::string& dir, const hunyuandit::HunyuanDiTConfig& config, at::ScalarType dtype, c10::Device device) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->dtype = dtype;
  impl->device = device;
  auto bert_tokenizer = tokenizers::BertTokenizer::Load(dir + "/tokenizer");
  if (!bert_tokenizer.ok()) return bert_tokenizer.status();
  impl->bert_tokenizer = *std::move(bert_tokenizer);
  auto bert_text = util::ReadFileToString(dir + "/text_encoder/config.json");
  if (!bert_text.ok()) return bert_text.status();
  auto bert_config = text::ParseBertConfig(*bert_text);
  if (!bert_config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/text_encoder/config.json: ", bert_config.status().message()));
  }
  if (bert_config->hidden_size != config.cross_attention_dim) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": text_encoder hidden_size ", bert_config->hidden_size,
                                                   " != transformer cross_attention_dim ", config.cross_attention_dim));
  }
  if (bert_config->max_position_embeddings < config.text_len) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": text_encoder max_position_embeddings ",
                                                   bert_config->max_position_embeddings, " < transformer text_len ",
                                                   config.text_len));
  }
  auto bert = text::BertModel::Create(*bert_config, dtype, models::ParameterInit::kUninitialized);
  if (!bert.ok()) return bert.status();
  impl->bert = *std::move(bert);
  {
    auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/text_encoder");
    if (!ckpt.ok()) return ckpt.status();
    if (absl::Status s = impl->bert->Load(*ckpt); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("text_encoder: ", s.message()));
    }
  }
  auto t5_tokenizer = tokenizers::T5Tokenizer::Load(dir + "/tokenizer_2/spiece.model");
  if (!t5_tokenizer.ok()) return t5_tokenizer.status();
  impl->t5_tokenizer = *std::move(t5_tokenizer);
  auto t5 = LoadT5Encoder(dir, "text_encoder_2", dtype);
  if (!t5.ok()) return t5.status();
  impl->t5 = *std::move(t5);
  if (impl->t5->config().d_model != config.cross_attention_dim_t5) {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": text_encoder_2 d_model ", impl->t5->config().d_model,
                                                   " != transformer cross_attention_dim_t5 ",
                                                   config.cross_attention_dim_t5));
  }
  if (absl::Status s = MoveToDevice("the text encoders", device, [&] {
        impl->bert->module().to(device);
        impl->t5->module().to(device);
      });
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<HunyuanDiTTextEncoder>(new HunyuanDiTTextEncoder(std::move(impl)));
}

absl::StatusOr<TextEmbeddings> HunyuanDiTTextEncoder::Encode(const std::string& prompt,
                                                             int max_sequence_length) const {
  const Impl& p = *impl_;
  const hunyuandit::HunyuanDiTConfig& c = p.config;
  at::NoGradGuard no_grad;
  // BERT: [CLS] pieces [SEP], padded to text_len, and its mask.
  const tokenizers::BertEncoding b = p.bert_tokenizer->Encode(prompt, c.text_len);
  const at::Tensor bert_ids = at::tensor(b.ids, at::kLong).view({1, c.text_len}).to(p.device);
  const at::Tensor bert_mask = at::tensor(b.mask, at::kLong).view({1, c.text_len}).to(p.device);
  auto bert_states = p.bert->Forward(bert_ids, bert_mask);
  if (!bert_states.ok()) return bert_states.status();
  // mT5: the pieces and </s>, truncated at max_sequence_length, padded to
  // text_len_t5; the mask covers the pieces and </s>.
  const int length = max_sequence_length <= 0 ? c.text_len_t5 : std::min(max_sequence_length, c.text_len_t5);
  auto tokens = p.t5_tokenizer->EncodeWithMask(prompt, length);
  if (!tokens.ok()) return tokens.status();
  tokens->ids.resize(c.text_len_t5, p.t5_tokenizer->pad_id());
  tokens->mask.resize(c.text_len_t5, 0);
  const at::Tensor t5_mask = at::tensor(tokens->mask, at::kLong).view({1, c.text_len_t5}).to(p.device);
  auto t5_states =
      p.t5->Forward(at::tensor(tokens->ids, at::kLong).view({1, c.text_len_t5}).to(p.device), t5_mask);
  if (!t5_states.ok()) return t5_states.status();
  TextEmbeddings e;
  e.pooled = at::zeros({1, 0}, at::TensorOptions().dtype(p.dtype).device(p.device));
  e.sequence = hunyuandit::HunyuanTextSequence(c, bert_states->to(p.dtype), t5_states->to(p.dtype));
  e.mask = at::cat({bert_mask, t5_mask}, 1).to(p.dtype);
  return e;
}

}  // namespace ditserve::worker::families
