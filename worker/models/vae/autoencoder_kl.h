#pragma once

// The decoder half of diffusers' AutoencoderKL (what text-to-image needs):
// latents -> RGB. Parameter names equal the checkpoint keys under
// "decoder." (and "post_quant_conv." when the config uses it). The encoder
// half is VaeEncoder (vae_encoder.h).

#include <cstdint>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "absl/status/statusor.h"
#include "worker/models/vae/band_exchange.h"
#include "worker/weights/safetensors.h"

namespace ditserve::worker::vae {

// vae/config.json.
struct VaeConfig {
  int in_channels = 3;
  int latent_channels = 16;
  int out_channels = 3;
  std::vector<int> block_out_channels = {128, 256, 512, 512};
  int layers_per_block = 2;
  int norm_num_groups = 32;
  double scaling_factor = 0.3611;
  double shift_factor = 0.1159;  // 0 when the config has none
  bool use_post_quant_conv = false;
  bool use_quant_conv = false;
  bool mid_block_add_attention = true;
  int sample_size = 1024;  // default image size in pixels

  // Spatial downscale of the latents: 2^(len(block_out_channels) - 1).
  int scale_factor() const { return 1 << (block_out_channels.size() - 1); }
};

// INVALID_ARGUMENT names the field (non-silu activations, block types other
// than DownEncoderBlock2D/UpDecoderBlock2D, or channels not divisible by the
// group count are rejected).
absl::StatusOr<VaeConfig> ParseVaeConfig(const std::string& json_text);

class VaeDecoder {
 public:
  static absl::StatusOr<std::unique_ptr<VaeDecoder>> Create(const VaeConfig& config, at::ScalarType dtype);
  ~VaeDecoder();

  const VaeConfig& config() const;
  // The dtype of the weights, and of the activations of a decode.
  at::ScalarType dtype() const;
  // Decoder parameters named as the checkpoint keys under "decoder." (and
  // post_quant_conv, if any, under "post_quant_conv."), for writing checkpoints.
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters();
  // Loads decoder.* (and post_quant_conv.*) from the vae checkpoint; the
  // encoder's keys are not needed for decoding and are left unread.
  absl::Status Load(const weights::SafetensorsCheckpoint& checkpoint);
  // Moves the weights to `device` (after Load).
  void To(c10::Device device);

  // Raw VAE latents [B, latent_channels, h, w] (already unscaled:
  // z / scaling_factor + shift_factor) -> image [B, 3, 8h, 8w] in [-1, 1]
  // (not clamped), float32, for inference (callers hold an
  // at::NoGradGuard): DecodeBand of one band holding every row, so a whole
  // decode and a decode in bands across ranks do the same arithmetic (group
  // norms from float64 sums) and give the same image. `peak_bytes`, when
  // set, gets the largest activation held.
  absl::StatusOr<at::Tensor> Decode(const at::Tensor& latents, int64_t* peak_bytes = nullptr) const;

  // The same map through the decoder modules' forward (LibTorch's group
  // norm), building an autograd graph when grad mode is on: for training.
  // Equal to Decode to float rounding.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& latents) const;

  // Collective over `exchange`'s ranks: this rank's band of rows of the
  // latents [B, C, rows, w] (bands in rank order, each ≥ 1 row) decoded to
  // its band of the image, float32 [B, out_channels, rows·f, w·f] with f the
  // scale factor. The bands stacked equal Decode of the whole latents to
  // float rounding (group norms reduce their sums in float64 across ranks;
  // not an approximation). `peak_bytes`, when set, gets the largest
  // activation this rank held.
  absl::StatusOr<at::Tensor> DecodeBand(const at::Tensor& latent_band, VaeBandExchange& exchange,
                                        int64_t* peak_bytes = nullptr) const;

 private:
  struct Impl;
  explicit VaeDecoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The shape of one decode's latents as a rank sees it: `band_rows` of the
// `rows` latent rows (all of them for a whole decode), `cols` columns.
struct DecodeShape {
  int64_t batch = 1;
  int64_t band_rows = 0;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Bytes of the largest activation (feature map) a decode of `shape` holds
// at `element_bytes` per element: what Decode and DecodeBand report as
// their peak when `halo_rows` is 2 (each 3×3 convolution's input carries a
// row from each neighbour, or of zero padding), Forward's largest feature
// map when it is 0. A closed form over the decoder's layers (no tensors are
// made).
int64_t DecodeActivationBytes(const VaeConfig& config, const DecodeShape& shape, int64_t element_bytes,
                              int64_t halo_rows);

// Images [B, C, H, W] resized to height × width as diffusers'
// VaeImageProcessor.resize_and_crop_tensor (PixArt's resolution binning):
// scaled by the larger of the two ratios with bilinear interpolation
// (align_corners false) to int(W·r) × int(H·r), then cropped at the
// centre. Unchanged when already that size.
at::Tensor ResizeAndCrop(const at::Tensor& images, int64_t height, int64_t width);

// [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] as diffusers' postprocess:
// round(clamp(x/2 + 0.5, 0, 1) · 255).
at::Tensor ToUint8Rgb(const at::Tensor& image);

}  // namespace ditserve::worker::vae
