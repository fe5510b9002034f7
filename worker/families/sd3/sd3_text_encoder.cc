#include "worker/families/sd3/sd3_text_encoder.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cstdint>
#include <vector>

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
namespace {

absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path) {
  auto text = util::ReadFileToString(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  return j;
}

// model_index.json's entry for a component: ["library", "Class"], or
// [null, null] (or absent) when the pipeline runs without it.
bool ComponentPresent(const nlohmann::json& index, const char* name) {
  if (!index.contains(name)) return false;
  const nlohmann::json& entry = index[name];
  return !entry.is_null() && !(entry.is_array() && (entry.empty() || entry[0].is_null()));
}

absl::StatusOr<std::unique_ptr<text::ClipTextModel>> LoadClip(const std::string& dir, const std::string& sub,
                                                              at::ScalarType dtype) {
  const std::string config_path = absl::StrCat(dir, "/", sub, "/config.json");
  auto config_text = util::ReadFileToString(config_path);
  if (!config_text.ok()) return config_text.status();
  auto config = text::ParseClipTextConfig(*config_text);
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", config.status().message()));
  if (!config->with_projection) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": architectures must name "
                                                   "CLIPTextModelWithProjection (SD3 pools the projected text_embeds)"));
  }
  auto clip = text::ClipTextModel::Create(*config, dtype, models::ParameterInit::kUninitialized);
  if (!clip.ok()) return clip.status();
  auto ckpt = weights::SafetensorsCheckpoint::Open(absl::StrCat(dir, "/", sub));
  if (!ckpt.ok()) return ckpt.status();
  if (absl::Status s = (*clip)->Load(*ckpt); !s.ok()) return absl::InvalidArgumentError(absl::StrCat(sub, ": ", s.message()));
  return clip;
}

}  // namespace

struct Sd3TextEncoder::Impl {
  std::unique_ptr<tokenizers::ClipTokenizer> clip_l_tokenizer, clip_g_tokenizer;
  std::unique_ptr<text::ClipTextModel> clip_l, clip_g;
  std::unique_ptr<tokenizers::T5Tokenizer> t5_tokenizer;  // null without T5
  std::unique_ptr<text::T5Encoder> t5;                     // null without T5
  int clip_max_length = 77;
  int sequence_dim = 4096;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

Sd3TextEncoder::Sd3TextEncoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Sd3TextEncoder::~Sd3TextEncoder() = default;
int Sd3TextEncoder::pooled_dim() const {
  return impl_->clip_l->config().projection_dim + impl_->clip_g->config().projection_dim;
}
int Sd3TextEncoder::sequence_dim() const { return impl_->sequence_dim; }
int Sd3TextEncoder::SequenceTokens(int max_sequence_length) const { return impl_->clip_max_length + max_sequence_length; }
int Sd3TextEncoder::clip_tokens() const { return impl_->clip_max_length; }
bool Sd3TextEncoder::has_t5() const { return impl_->t5 != nullptr; }

absl::StatusOr<std::unique_ptr<Sd3TextEncoder>> Sd3TextEncoder::Load(const std::string& dir, at::ScalarType dtype,
                                                                     c10::Device device) {
  auto impl = std::make_unique<Impl>();
  impl->dtype = dtype;
  impl->device = device;
  auto index = ReadJsonObject(dir + "/model_index.json");
  if (!index.ok()) return index.status();
  const bool with_t5 = ComponentPresent(*index, "text_encoder_3");

  auto clip_l_tokenizer = tokenizers::ClipTokenizer::Load(dir + "/tokenizer");
  if (!clip_l_tokenizer.ok()) return clip_l_tokenizer.status();
  impl->clip_l_tokenizer = *std::move(clip_l_tokenizer);
  auto clip_g_tokenizer = tokenizers::ClipTokenizer::Load(dir + "/tokenizer_2");
  if (!clip_g_tokenizer.ok()) return clip_g_tokenizer.status();
  impl->clip_g_tokenizer = *std::move(clip_g_tokenizer);
  // diffusers pads both CLIP prompts to the first tokenizer's length.
  if (auto tc = util::ReadFileToString(dir + "/tokenizer/tokenizer_config.json"); tc.ok()) {
    const nlohmann::json j = nlohmann::json::parse(*tc, nullptr, false);
    if (j.is_object() && j.contains("model_max_length") && j["model_max_length"].is_number_integer() &&
        j["model_max_length"].get<int64_t>() >= 2) {
      impl->clip_max_length = static_cast<int>(std::min<int64_t>(j["model_max_length"].get<int64_t>(), 1 << 20));
    }
  }
  auto clip_l = LoadClip(dir, "text_encoder", dtype);
  if (!clip_l.ok()) return clip_l.status();
  impl->clip_l = *std::move(clip_l);
  auto clip_g = LoadClip(dir, "text_encoder_2", dtype);
  if (!clip_g.ok()) return clip_g.status();
  impl->clip_g = *std::move(clip_g);
  impl->clip_max_length = std::min({impl->clip_max_length, impl->clip_l->config().max_position_embeddings,
                                    impl->clip_g->config().max_position_embeddings});

  if (with_t5) {
    auto t5_tokenizer = tokenizers::T5Tokenizer::Load(dir + "/tokenizer_3/spiece.model");
    if (!t5_tokenizer.ok()) return t5_tokenizer.status();
    impl->t5_tokenizer = *std::move(t5_tokenizer);
    auto t5 = LoadT5Encoder(dir, "text_encoder_3", dtype);
    if (!t5.ok()) return t5.status();
    impl->t5 = *std::move(t5);
    impl->sequence_dim = impl->t5->config().d_model;
  } else {
    const std::string config_path = dir + "/transformer/config.json";
    auto transformer = ReadJsonObject(config_path);
    if (!transformer.ok()) return transformer.status();
    if (transformer->contains("joint_attention_dim")) {
      const nlohmann::json& v = (*transformer)["joint_attention_dim"];
      if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (1 << 20)) {
        return absl::InvalidArgumentError(
            absl::StrCat(config_path, ": joint_attention_dim must be an integer in [1, 1048576]"));
      }
      impl->sequence_dim = v.get<int>();
    }
  }
  if (absl::Status s = MoveToDevice("the text encoders", device, [&] {
        impl->clip_l->module().to(device);
        impl->clip_g->module().to(device);
        if (impl->t5 != nullptr) impl->t5->module().to(device);
      });
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<Sd3TextEncoder>(new Sd3TextEncoder(std::move(impl)));
}

absl::StatusOr<TextEmbeddings> Sd3TextEncoder::Encode(const std::string& prompt, int max_sequence_length) const {
  const Impl& p = *impl_;
  if (max_sequence_length < 1 || max_sequence_length > kMaxSequenceLengthLimit) {
    return absl::InvalidArgumentError(absl::StrCat("max_sequence_length must be in [1, ", kMaxSequenceLengthLimit,
                                                   "], got ", max_sequence_length));
  }
  at::NoGradGuard no_grad;
  const auto ids = [&p](const std::vector<int64_t>& v) {
    return at::tensor(v, at::kLong).view({1, static_cast<int64_t>(v.size())}).to(p.device);
  };
  auto l_ids = p.clip_l_tokenizer->Encode(prompt, p.clip_max_length);
  if (!l_ids.ok()) return l_ids.status();
  auto g_ids = p.clip_g_tokenizer->Encode(prompt, p.clip_max_length);
  if (!g_ids.ok()) return g_ids.status();
  auto l = p.clip_l->Forward(ids(*l_ids));
  if (!l.ok()) return l.status();
  auto g = p.clip_g->Forward(ids(*g_ids));
  if (!g.ok()) return g.status();
  if (!l->penultimate.defined() || !g->penultimate.defined()) {
    return absl::FailedPreconditionError("the CLIP text encoders need at least one layer (hidden_states[-2])");
  }
  at::Tensor t5;
  if (p.t5 != nullptr) {
    auto t5_ids = p.t5_tokenizer->Encode(prompt, max_sequence_length);
    if (!t5_ids.ok()) return t5_ids.status();
    auto t5_out = p.t5->Forward(ids(*t5_ids));
    if (!t5_out.ok()) return t5_out.status();
    t5 = t5_out->to(p.dtype);
  } else {
    t5 = at::zeros({1, max_sequence_length, p.sequence_dim}, at::TensorOptions().dtype(p.dtype).device(p.device));
  }
  // torch.nn.functional.pad on the feature axis: zeros up to T5's width
  // (a negative width crops, as in diffusers).
  const at::Tensor clip = at::cat({l->penultimate.to(p.dtype), g->penultimate.to(p.dtype)}, -1);
  const at::Tensor padded = at::constant_pad_nd(clip, {0, t5.size(-1) - clip.size(-1)}, 0.0);
  return TextEmbeddings{at::cat({l->text_embeds, g->text_embeds}, -1).to(p.dtype), at::cat({padded, t5}, -2)};
}

}  // namespace ditserve::worker::families
