#include "worker/families/flux/flux_text_encoder.h"


#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "worker/families/components.h"
#include "worker/models/text/clip_text_model.h"
#include "worker/models/text/t5_encoder.h"
#include "worker/tokenizers/clip_tokenizer.h"
#include "worker/tokenizers/t5_tokenizer.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::families {

struct FluxTextEncoder::Impl {
  std::unique_ptr<tokenizers::ClipTokenizer> clip_tokenizer;
  std::unique_ptr<tokenizers::T5Tokenizer> t5_tokenizer;
  std::unique_ptr<text::ClipTextModel> clip;
  std::unique_ptr<text::T5Encoder> t5;
  int clip_max_length = 77;
  int t5_max_length = 512;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

FluxTextEncoder::FluxTextEncoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FluxTextEncoder::~FluxTextEncoder() = default;
int FluxTextEncoder::pooled_dim() const { return impl_->clip->config().hidden_size; }
int FluxTextEncoder::sequence_dim() const { return impl_->t5->config().d_model; }
int FluxTextEncoder::default_max_sequence_length() const { return impl_->t5_max_length; }

absl::StatusOr<std::unique_ptr<FluxTextEncoder>> FluxTextEncoder::Load(const std::string& dir, at::ScalarType dtype,
                                                                       c10::Device device) {
  auto impl = std::make_unique<Impl>();
  impl->dtype = dtype;
  impl->device = device;
  auto clip_tokenizer = tokenizers::ClipTokenizer::Load(dir + "/tokenizer");
  if (!clip_tokenizer.ok()) return clip_tokenizer.status();
  impl->clip_tokenizer = *std::move(clip_tokenizer);
  auto t5_tokenizer = tokenizers::T5Tokenizer::Load(dir + "/tokenizer_2/spiece.model");
  if (!t5_tokenizer.ok()) return t5_tokenizer.status();
  impl->t5_tokenizer = *std::move(t5_tokenizer);
  if (auto tc = util::ReadFileToString(dir + "/tokenizer/tokenizer_config.json"); tc.ok()) {
    const nlohmann::json j = nlohmann::json::parse(*tc, nullptr, false);
    if (j.is_object() && j.contains("model_max_length") && j["model_max_length"].is_number_integer()) {
      impl->clip_max_length = static_cast<int>(std::min<int64_t>(j["model_max_length"].get<int64_t>(), 77));
    }
  }
  if (auto tc = util::ReadFileToString(dir + "/tokenizer_2/tokenizer_config.json"); tc.ok()) {
    const nlohmann::json j = nlohmann::json::parse(*tc, nullptr, false);
    if (j.is_object() && j.contains("model_max_length") && j["model_max_length"].is_number_integer() &&
        j["model_max_length"].get<int64_t>() > 0) {
      impl->t5_max_length = static_cast<int>(std::min<int64_t>(j["model_max_length"].get<int64_t>(), 512));
    }
  }
  auto text = util::ReadFileToString(dir + "/text_encoder/config.json");
  if (!text.ok()) return text.status();
  auto clip_config = text::ParseClipTextConfig(*text);
  if (!clip_config.ok()) return clip_config.status();
  impl->clip_max_length = std::min(impl->clip_max_length, clip_config->max_position_embeddings);
  auto clip = text::ClipTextModel::Create(*clip_config, dtype, models::ParameterInit::kUninitialized);
  if (!clip.ok()) return clip.status();
  impl->clip = *std::move(clip);
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/text_encoder");
  if (!ckpt.ok()) return ckpt.status();
  if (absl::Status s = impl->clip->Load(*ckpt); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("text_encoder: ", s.message()));
  auto t5 = LoadT5Encoder(dir, "text_encoder_2", dtype);
  if (!t5.ok()) return t5.status();
  impl->t5 = *std::move(t5);
  if (absl::Status s = MoveToDevice("the text encoders", device, [&] {
        impl->clip->module().to(device);
        impl->t5->module().to(device);
      });
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<FluxTextEncoder>(new FluxTextEncoder(std::move(impl)));
}

absl::StatusOr<TextEmbeddings> FluxTextEncoder::Encode(const std::string& prompt, int max_sequence_length) const {
  const Impl& p = *impl_;
  at::NoGradGuard no_grad;
  auto clip_ids = p.clip_tokenizer->Encode(prompt, p.clip_max_length);
  if (!clip_ids.ok()) return clip_ids.status();
  auto t5_ids = p.t5_tokenizer->Encode(prompt, max_sequence_length);
  if (!t5_ids.ok()) return t5_ids.status();
  const auto ids = [&p](const std::vector<int64_t>& v) {
    return at::tensor(v, at::kLong).view({1, static_cast<int64_t>(v.size())}).to(p.device);
  };
  auto clip_out = p.clip->Forward(ids(*clip_ids));
  if (!clip_out.ok()) return clip_out.status();
  auto t5_out = p.t5->Forward(ids(*t5_ids));
  if (!t5_out.ok()) return t5_out.status();
  return TextEmbeddings{clip_out->pooled.to(p.dtype), t5_out->to(p.dtype)};
}

}  // namespace ditserve::worker::families
