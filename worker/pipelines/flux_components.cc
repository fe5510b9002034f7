#include "worker/pipelines/flux_components.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/text/clip_text_model.h"
#include "worker/models/text/t5_encoder.h"
#include "worker/tokenizers/clip_tokenizer.h"
#include "worker/tokenizers/t5_tokenizer.h"
#include "worker/weights/load_module.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::pipelines {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <typename T>
absl::Status Assign(absl::StatusOr<T> value, T* out) {
  if (!value.ok()) return value.status();
  *out = *std::move(value);
  return absl::OkStatus();
}

absl::Status MoveTo(torch::nn::Module& module, c10::Device device) {
  if (device.is_cpu()) return absl::OkStatus();
  try {
    module.to(device);
  } catch (const std::exception& e) {
    std::string what = e.what();
    return absl::FailedPreconditionError(absl::StrCat("cannot move the model to ", device.str(), ": ",
                                                      what.substr(0, what.find('\n'))));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckFluxDirectory(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
  auto index_text = ReadFile(dir + "/model_index.json");
  if (!index_text.ok()) return index_text.status();
  const nlohmann::json index = nlohmann::json::parse(*index_text, nullptr, false);
  if (index.is_discarded() || !index.is_object() || !index.contains("_class_name")) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/model_index.json is not a diffusers pipeline index"));
  }
  if (index["_class_name"] != "FluxPipeline") {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": ", index["_class_name"].dump(),
                                                   " is not supported (FluxPipeline is)"));
  }
  for (const char* component : {"scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                                "transformer", "vae"}) {
    if (!index.contains(component) || !std::filesystem::is_directory(absl::StrCat(dir, "/", component))) {
      return absl::NotFoundError(absl::StrCat(dir, ": component ", component, " is missing"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<flux::FlowMatchSchedulerConfig> LoadSchedulerConfig(const std::string& dir) {
  auto text = ReadFile(dir + "/scheduler/scheduler_config.json");
  if (!text.ok()) return text.status();
  return flux::ParseFlowMatchSchedulerConfig(*text);
}

absl::StatusOr<flux::FluxTransformerConfig> LoadTransformerConfig(const std::string& dir) {
  auto text = ReadFile(dir + "/transformer/config.json");
  if (!text.ok()) return text.status();
  return flux::ParseFluxTransformerConfig(*text);
}

absl::StatusOr<vae::VaeConfig> LoadVaeConfig(const std::string& dir) {
  auto text = ReadFile(dir + "/vae/config.json");
  if (!text.ok()) return text.status();
  return vae::ParseVaeConfig(*text);
}

absl::StatusOr<std::unique_ptr<flux::FluxTransformer>> LoadTransformer(const std::string& dir,
                                                                       const flux::FluxTransformerConfig& config,
                                                                       at::ScalarType dtype, c10::Device device,
                                                                       const flux::FluxPart& part) {
  auto transformer = flux::FluxTransformer::Create(config, dtype, part);
  if (!transformer.ok()) return transformer.status();
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/transformer");
  if (!ckpt.ok()) return ckpt.status();
  weights::LoadOptions options;
  options.partial = part.first_block != 0 || part.end_block != (*transformer)->num_blocks() || !part.embedders ||
                    !part.head;
  if (absl::Status s = weights::LoadModuleWeights((*transformer)->module(), *ckpt, options); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("transformer: ", s.message()));
  }
  if (absl::Status s = MoveTo((*transformer)->module(), device); !s.ok()) return s;
  return transformer;
}

absl::StatusOr<std::unique_ptr<vae::VaeDecoder>> LoadVaeDecoder(const std::string& dir, const vae::VaeConfig& config,
                                                                at::ScalarType dtype, c10::Device device) {
  auto vae = vae::VaeDecoder::Create(config, dtype);
  if (!vae.ok()) return vae.status();
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/vae");
  if (!ckpt.ok()) return ckpt.status();
  if (absl::Status s = (*vae)->Load(*ckpt); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("vae: ", s.message()));
  if (!device.is_cpu()) {
    try {
      (*vae)->To(device);
    } catch (const std::exception& e) {
      std::string what = e.what();
      return absl::FailedPreconditionError(absl::StrCat("cannot move the VAE to ", device.str(), ": ",
                                                        what.substr(0, what.find('\n'))));
    }
  }
  return vae;
}

struct FluxTextEncoders::Impl {
  std::unique_ptr<tokenizers::ClipTokenizer> clip_tokenizer;
  std::unique_ptr<tokenizers::T5Tokenizer> t5_tokenizer;
  std::unique_ptr<text::ClipTextModel> clip;
  std::unique_ptr<text::T5Encoder> t5;
  int clip_max_length = 77;
  int pooled_dim = 0, sequence_dim = 0;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

FluxTextEncoders::FluxTextEncoders(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FluxTextEncoders::~FluxTextEncoders() = default;
int FluxTextEncoders::pooled_dim() const { return impl_->pooled_dim; }
int FluxTextEncoders::sequence_dim() const { return impl_->sequence_dim; }

absl::StatusOr<std::unique_ptr<FluxTextEncoders>> FluxTextEncoders::Load(const std::string& dir, at::ScalarType dtype,
                                                                         c10::Device device) {
  auto impl = std::make_unique<Impl>();
  impl->dtype = dtype;
  impl->device = device;
  const auto config = [&](const std::string& path) { return ReadFile(absl::StrCat(dir, "/", path)); };
  if (absl::Status s = Assign(tokenizers::ClipTokenizer::Load(dir + "/tokenizer"), &impl->clip_tokenizer); !s.ok()) return s;
  if (absl::Status s = Assign(tokenizers::T5Tokenizer::Load(dir + "/tokenizer_2/spiece.model"), &impl->t5_tokenizer);
      !s.ok()) {
    return s;
  }
  if (auto tc = config("tokenizer/tokenizer_config.json"); tc.ok()) {
    const nlohmann::json j = nlohmann::json::parse(*tc, nullptr, false);
    if (j.is_object() && j.contains("model_max_length") && j["model_max_length"].is_number_integer()) {
      impl->clip_max_length = static_cast<int>(std::min<int64_t>(j["model_max_length"].get<int64_t>(), 77));
    }
  }
  auto text = config("text_encoder/config.json");
  if (!text.ok()) return text.status();
  auto clip_config = text::ParseClipTextConfig(*text);
  if (!clip_config.ok()) return clip_config.status();
  impl->clip_max_length = std::min(impl->clip_max_length, clip_config->max_position_embeddings);
  impl->pooled_dim = clip_config->hidden_size;
  if (absl::Status s = Assign(text::ClipTextModel::Create(*clip_config, dtype), &impl->clip); !s.ok()) return s;
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/text_encoder");
  if (!ckpt.ok()) return ckpt.status();
  if (absl::Status s = impl->clip->Load(*ckpt); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("text_encoder: ", s.message()));
  text = config("text_encoder_2/config.json");
  if (!text.ok()) return text.status();
  auto t5_config = text::ParseT5Config(*text);
  if (!t5_config.ok()) return t5_config.status();
  impl->sequence_dim = t5_config->d_model;
  if (absl::Status s = Assign(text::T5Encoder::Create(*t5_config, dtype), &impl->t5); !s.ok()) return s;
  ckpt = weights::SafetensorsCheckpoint::Open(dir + "/text_encoder_2");
  if (!ckpt.ok()) return ckpt.status();
  if (absl::Status s = impl->t5->Load(*ckpt); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("text_encoder_2: ", s.message()));
  if (absl::Status s = MoveTo(impl->clip->module(), device); !s.ok()) return s;
  if (absl::Status s = MoveTo(impl->t5->module(), device); !s.ok()) return s;
  return std::unique_ptr<FluxTextEncoders>(new FluxTextEncoders(std::move(impl)));
}

absl::StatusOr<FluxTextEncoders::Embeddings> FluxTextEncoders::Encode(const std::string& prompt,
                                                                      int max_sequence_length) const {
  const Impl& p = *impl_;
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
  return Embeddings{clip_out->pooled.to(p.dtype), t5_out->to(p.dtype)};
}

at::Tensor InitialLatents(uint64_t seed, int64_t channels, int64_t h, int64_t w) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return flux::PackLatents(at::randn({1, channels, h, w}, gen, at::TensorOptions().dtype(at::kFloat)));
}

at::Tensor ModelTimestep(float sigma, int64_t batch, at::ScalarType dtype, c10::Device device) {
  const at::Tensor t = at::full({1}, sigma, at::kFloat) * 1000;
  return (t.to(dtype) / 1000).to(device).expand({batch}).contiguous();
}

absl::StatusOr<at::Tensor> DecodeLatents(const vae::VaeDecoder& vae, const at::Tensor& packed, int64_t h, int64_t w) {
  const double sf = vae.config().scaling_factor, shift = vae.config().shift_factor;
  const at::Tensor z = flux::UnpackLatents(packed, h, w) / sf + shift;
  auto image = vae.Decode(z);
  if (!image.ok()) return image.status();
  return vae::ToUint8Rgb(*image)[0];
}

}  // namespace ditserve::worker::pipelines
