#pragma once

// The encoder half of diffusers' AutoencoderKL: RGB -> the diagonal
// Gaussian over latents. Parameter names equal the checkpoint keys under
// "encoder." (and "quant_conv." when the config uses it), so a vae/
// directory holds one AutoencoderKL that diffusers loads whole.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::vae {

// diffusers' DiagonalGaussianDistribution over raw (unscaled) latents.
struct LatentDistribution {
  at::Tensor mean;    // [B, latent_channels, h, w]
  at::Tensor logvar;  // same shape, clamped to [-30, 20]

  // mean + exp(logvar / 2) · N(0, 1) drawn from `generator` (CPU).
  at::Tensor Sample(at::Generator& generator) const;
  // KL divergence to N(0, I), summed over channels and pixels: [B].
  at::Tensor Kl() const;
};

class VaeEncoder {
 public:
  // Parameters in `dtype` on CPU, default-initialised until loaded.
  // INVALID_ARGUMENT if the config has no channels.
  static absl::StatusOr<std::unique_ptr<VaeEncoder>> Create(const VaeConfig& config, at::ScalarType dtype);
  ~VaeEncoder();

  const VaeConfig& config() const;
  // Parameters named as the checkpoint keys ("encoder.conv_in.weight", …,
  // "quant_conv.weight"), in registration order; the tensors are the live
  // parameters (for optimisers and checkpoint writing).
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters();
  // Loads encoder.* (and quant_conv.*); INVALID_ARGUMENT on missing or
  // mis-shaped keys.
  absl::Status Load(const weights::SafetensorsCheckpoint& checkpoint);
  void To(c10::Device device);

  // image [B, in_channels, H, W] in [-1, 1], H and W multiples of the
  // downscale -> the latent distribution (float32). Builds an autograd graph
  // when grad mode is on. INVALID_ARGUMENT on a mis-shaped image.
  absl::StatusOr<LatentDistribution> Encode(const at::Tensor& image) const;

 private:
  struct Impl;
  explicit VaeEncoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditserve::worker::vae
