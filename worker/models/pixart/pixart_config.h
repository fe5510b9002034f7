#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ditserve::worker::pixart {

// transformer/config.json of a diffusers PixArtTransformer2DModel (PixArt-α
// and PixArt-Σ). Defaults are diffusers' (PixArt-XL-2's sizes).
struct PixArtTransformerConfig {
  int num_attention_heads = 16;
  int attention_head_dim = 72;
  int in_channels = 4;
  int out_channels = 8;  // config's null means in_channels; 2·in_channels: learned variance (dropped)
  int num_layers = 28;
  int cross_attention_dim = 1152;  // must equal inner_dim() (the caption projection's width)
  bool attention_bias = true;
  int sample_size = 128;  // latent pixels the position embedding was trained at
  int patch_size = 2;     // only 2 (the shared 2×2 token packing)
  int caption_channels = 4096;  // the T5 width
  double norm_eps = 1e-6;
  // config's null means max(sample_size / 64, 1) (diffusers' rule).
  double interpolation_scale = 1.0;
  // The micro-conditions (resolution, aspect ratio) of PixArt-α-1024;
  // config's null means sample_size == 128 (diffusers' rule).
  bool use_additional_conditions = false;

  int inner_dim() const { return num_attention_heads * attention_head_dim; }
  // Token rows of the grid the position embedding was computed for.
  int base_size() const { return sample_size / patch_size; }
};

// OK when the model can be built: positive sizes, patch_size 2,
// cross_attention_dim = inner_dim, inner_dim a multiple of 4 (the sin-cos
// embedding) and, with additional conditions, of 3; out_channels
// in_channels or twice it. INVALID_ARGUMENT names the field.
absl::Status ValidatePixArtTransformerConfig(const PixArtTransformerConfig& config);

// Parses the JSON text and validates it as above. Fields that select a
// layout not written here (norm_type other than "ada_norm_single",
// norm_elementwise_affine, activation_fn other than "gelu-approximate",
// attention_type other than "default", caption_channels null) are
// INVALID_ARGUMENT naming the field. Unknown keys are ignored.
absl::StatusOr<PixArtTransformerConfig> ParsePixArtTransformerConfig(const std::string& json_text);

}  // namespace ditserve::worker::pixart
