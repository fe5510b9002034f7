#include "worker/families/components.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/read_file.h"
#include "worker/weights/load_module.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::families {

absl::Status MoveToDevice(absl::string_view what, c10::Device device, const std::function<void()>& move) {
  if (device.is_cpu()) return absl::OkStatus();
  try {
    move();
  } catch (const std::exception& e) {
    const std::string text = e.what();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot move ", what, " to ", device.str(), ": ", text.substr(0, text.find('\n'))));
  }
  return absl::OkStatus();
}

absl::StatusOr<flux::FlowMatchSchedulerConfig> LoadSchedulerConfig(const std::string& dir) {
  auto text = util::ReadFileToString(dir + "/scheduler/scheduler_config.json");
  if (!text.ok()) return text.status();
  return flux::ParseFlowMatchSchedulerConfig(*text);
}

absl::StatusOr<std::unique_ptr<text::T5Encoder>> LoadT5Encoder(const std::string& dir, const std::string& subdir,
                                                              at::ScalarType dtype) {
  const std::string config_path = absl::StrCat(dir, "/", subdir, "/config.json");
  auto json = util::ReadFileToString(config_path);
  if (!json.ok()) return json.status();
  auto config = text::ParseT5Config(*json);
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", config.status().message()));
  auto t5 = text::T5Encoder::Create(*config, dtype, models::ParameterInit::kUninitialized);
  if (!t5.ok()) return t5.status();
  auto ckpt = weights::SafetensorsCheckpoint::Open(absl::StrCat(dir, "/", subdir));
  if (!ckpt.ok()) return ckpt.status();
  if (absl::Status s = (*t5)->Load(*ckpt); !s.ok()) return absl::InvalidArgumentError(absl::StrCat(subdir, ": ", s.message()));
  return t5;
}

absl::StatusOr<vae::VaeConfig> LoadVaeConfig(const std::string& dir) {
  auto text = util::ReadFileToString(dir + "/vae/config.json");
  if (!text.ok()) return text.status();
  return vae::ParseVaeConfig(*text);
}

absl::StatusOr<std::unique_ptr<vae::VaeDecoder>> LoadVaeDecoder(const std::string& dir, const vae::VaeConfig& config,
                                                                at::ScalarType dtype, c10::Device device) {
  auto vae = vae::VaeDecoder::Create(config, dtype);
  if (!vae.ok()) return vae.status();
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/vae");
  if (!ckpt.ok()) return ckpt.status();
  if (absl::Status s = (*vae)->Load(*ckpt); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("vae: ", s.message()));
  if (absl::Status s = MoveToDevice("the VAE", device, [&] { (*vae)->To(device); }); !s.ok()) return s;
  return vae;
}

absl::Status LoadTransformerWeights(const std::string& dir, models::DitTransformer& transformer, c10::Device device) {
  auto ckpt = weights::SafetensorsCheckpoint::Open(dir + "/transformer");
  if (!ckpt.ok()) return ckpt.status();
  const models::DitPart& held = transformer.part();
  weights::LoadOptions options;
  options.partial =
      held.first_block != 0 || held.end_block != transformer.num_blocks() || !held.embedders || !held.head;
  if (absl::Status s = weights::LoadModuleWeights(transformer.module(), *ckpt, options); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("transformer: ", s.message()));
  }
  return MoveToDevice("the model", device, [&] { transformer.module().to(device); });
}

absl::Status CheckTextWidths(const std::string& dir, int joint_attention_dim, int pooled_projection_dim,
                             const TextConditioner& text) {
  if (joint_attention_dim == text.sequence_dim() && pooled_projection_dim == text.pooled_dim()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(dir, ": transformer joint_attention_dim ", joint_attention_dim,
                                                 " / pooled_projection_dim ", pooled_projection_dim,
                                                 " do not match the text encoders' ", text.sequence_dim(), " / ",
                                                 text.pooled_dim()));
}

at::Tensor InitialLatents(uint64_t seed, int64_t channels, int64_t h, int64_t w) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return PackedNoise(gen, channels, h, w);
}

at::Tensor PackedNoise(at::Generator& generator, int64_t channels, int64_t h, int64_t w) {
  return flux::PackLatents(at::randn({1, channels, h, w}, generator, at::TensorOptions().dtype(at::kFloat)));
}

at::Tensor VaeLatents(const vae::VaeConfig& config, const at::Tensor& packed, int64_t h, int64_t w) {
  return flux::UnpackLatents(packed, h, w) / config.scaling_factor + config.shift_factor;
}

absl::StatusOr<at::Tensor> DecodeLatents(const vae::VaeDecoder& vae, const at::Tensor& packed, int64_t h, int64_t w) {
  auto image = vae.Decode(VaeLatents(vae.config(), packed, h, w));
  if (!image.ok()) return image.status();
  return vae::ToUint8Rgb(*image)[0];
}

}  // namespace ditserve::worker::families
