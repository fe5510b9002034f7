#include "worker/models/vae/autoencoder_kl.h"

#include <ATen/ATen.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/vae/decoder_modules.h"
#include "worker/models/vae/vae_blocks.h"
#include "worker/weights/load_module.h"

namespace ditserve::worker::vae {

absl::StatusOr<VaeConfig> ParseVaeConfig(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("vae config: not a JSON object");
  VaeConfig c;
  const auto integer = [&](const char* key, int* out) -> absl::Status {
    if (!j.contains(key)) return absl::OkStatus();
    if (!j[key].is_number_integer() || j[key].get<int>() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("vae config: ", key, " must be a positive integer"));
    }
    *out = j[key].get<int>();
    return absl::OkStatus();
  };
  for (auto [key, out] : {std::pair{"latent_channels", &c.latent_channels}, {"out_channels", &c.out_channels},
                          {"in_channels", &c.in_channels},
                          {"layers_per_block", &c.layers_per_block}, {"norm_num_groups", &c.norm_num_groups}}) {
    if (absl::Status s = integer(key, out); !s.ok()) return s;
  }
  if (j.contains("block_out_channels")) {
    c.block_out_channels.clear();
    for (const auto& v : j["block_out_channels"]) {
      if (!v.is_number_integer() || v.get<int>() < 1) {
        return absl::InvalidArgumentError("vae config: block_out_channels must be positive integers");
      }
      c.block_out_channels.push_back(v.get<int>());
    }
  }
  if (c.block_out_channels.empty()) return absl::InvalidArgumentError("vae config: block_out_channels is empty");
  for (int ch : c.block_out_channels) {
    if (ch % c.norm_num_groups != 0) {
      return absl::InvalidArgumentError(absl::StrCat("vae config: block_out_channels ", ch,
                                                     " does not divide by norm_num_groups ", c.norm_num_groups));
    }
  }
  if (j.contains("scaling_factor") && j["scaling_factor"].is_number()) c.scaling_factor = j["scaling_factor"].get<double>();
  c.shift_factor = (j.contains("shift_factor") && j["shift_factor"].is_number()) ? j["shift_factor"].get<double>() : 0.0;
  if (c.scaling_factor == 0) return absl::InvalidArgumentError("vae config: scaling_factor must not be 0");
  if (j.contains("use_post_quant_conv") && j["use_post_quant_conv"].is_boolean()) {
    c.use_post_quant_conv = j["use_post_quant_conv"].get<bool>();
  } else if (!j.contains("use_post_quant_conv")) {
    c.use_post_quant_conv = true;  // diffusers' default
  }
  if (j.contains("use_quant_conv") && j["use_quant_conv"].is_boolean()) {
    c.use_quant_conv = j["use_quant_conv"].get<bool>();
  } else if (!j.contains("use_quant_conv")) {
    c.use_quant_conv = true;  // diffusers' default
  }
  if (j.contains("sample_size") && j["sample_size"].is_number_integer() && j["sample_size"].get<int>() > 0) {
    c.sample_size = j["sample_size"].get<int>();
  }
  if (j.contains("mid_block_add_attention") && j["mid_block_add_attention"].is_boolean()) {
    c.mid_block_add_attention = j["mid_block_add_attention"].get<bool>();
  }
  if (j.contains("act_fn") && j["act_fn"] != "silu") {
    return absl::InvalidArgumentError(absl::StrCat("vae config: act_fn ", j["act_fn"].dump(), " is not supported"));
  }
  for (auto [key, type] : {std::pair{"up_block_types", "UpDecoderBlock2D"}, {"down_block_types", "DownEncoderBlock2D"}}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_array() || j[key].size() != c.block_out_channels.size()) {
      return absl::InvalidArgumentError(absl::StrCat("vae config: ", key, " must match block_out_channels"));
    }
    for (const auto& t : j[key]) {
      if (t != type) {
        return absl::InvalidArgumentError(absl::StrCat("vae config: ", key, " entry ", t.dump(), " is not supported"));
      }
    }
  }
  return c;
}

VaeDecoder::VaeDecoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VaeDecoder::~VaeDecoder() = default;
const VaeConfig& VaeDecoder::config() const { return impl_->config; }

std::vector<std::pair<std::string, at::Tensor>> VaeDecoder::NamedParameters() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : impl_->decoder->named_parameters()) out.push_back({"decoder." + p.key(), p.value()});
  if (impl_->post_quant_conv) {
    for (const auto& p : impl_->post_quant_conv->named_parameters()) out.push_back({"post_quant_conv." + p.key(), p.value()});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<VaeDecoder>> VaeDecoder::Create(const VaeConfig& config, at::ScalarType dtype) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->decoder = std::make_shared<Decoder>(config);
  impl->decoder->to(dtype);
  if (config.use_post_quant_conv) {
    impl->post_quant_conv = VaeConv(config.latent_channels, config.latent_channels, 1);
    impl->post_quant_conv->to(dtype);
  }
  return std::unique_ptr<VaeDecoder>(new VaeDecoder(std::move(impl)));
}

absl::Status VaeDecoder::Load(const weights::SafetensorsCheckpoint& checkpoint) {
  if (absl::Status s = weights::LoadModuleWeights(*impl_->decoder, checkpoint, "decoder."); !s.ok()) return s;
  if (impl_->post_quant_conv) {
    return weights::LoadModuleWeights(*impl_->post_quant_conv, checkpoint, "post_quant_conv.");
  }
  return absl::OkStatus();
}

at::ScalarType VaeDecoder::dtype() const { return impl_->decoder->conv_in->weight.scalar_type(); }

void VaeDecoder::To(c10::Device device) {
  impl_->decoder->to(device);
  if (impl_->post_quant_conv) impl_->post_quant_conv->to(device);
}

absl::StatusOr<at::Tensor> VaeDecoder::Decode(const at::Tensor& latents, int64_t* peak_bytes) const {
  SingleBandExchange whole;
  return DecodeBand(latents, whole, peak_bytes);
}

absl::StatusOr<at::Tensor> VaeDecoder::Forward(const at::Tensor& latents) const {
  const VaeConfig& c = impl_->config;
  if (!latents.defined() || latents.dim() != 4 || latents.size(1) != c.latent_channels) {
    return absl::InvalidArgumentError(absl::StrCat("vae: latents must be [B, ", c.latent_channels, ", h, w]"));
  }
  at::Tensor z = latents.to(impl_->decoder->conv_in->weight.scalar_type());
  if (impl_->post_quant_conv) z = impl_->post_quant_conv->forward(z);
  auto image = impl_->decoder->forward(z);
  if (!image.ok()) return image.status();
  return image->to(at::kFloat);
}

at::Tensor ResizeAndCrop(const at::Tensor& images, int64_t height, int64_t width) {
  const int64_t H = images.size(2), W = images.size(3);
  if (H == height && W == width) return images;
  const double ratio = std::max(static_cast<double>(height) / static_cast<double>(H),
                                static_cast<double>(width) / static_cast<double>(W));
  // int() truncates; never below the target (a product one ulp short).
  const int64_t rw = std::max(width, static_cast<int64_t>(static_cast<double>(W) * ratio));
  const int64_t rh = std::max(height, static_cast<int64_t>(static_cast<double>(H) * ratio));
  const at::Tensor resized = at::upsample_bilinear2d(images, {rh, rw}, /*align_corners=*/false);
  const int64_t x0 = (rw - width) / 2, y0 = (rh - height) / 2;
  return resized.narrow(2, y0, height).narrow(3, x0, width);
}

at::Tensor ToUint8Rgb(const at::Tensor& image) {
  return (image.to(at::kFloat) / 2 + 0.5).clamp(0, 1).mul(255).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous().cpu();
}

}  // namespace ditserve::worker::vae
