#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ditserve::worker::sd3 {

// transformer/config.json of a diffusers SD3Transformer2DModel (Stable
// Diffusion 3 and 3.5). Defaults are diffusers' (SD3-medium's sizes).
struct Sd3TransformerConfig {
  int sample_size = 128;  // latent pixels the position embedding was trained at
  int patch_size = 2;     // only 2 (the shared 2×2 token packing)
  int in_channels = 16;
  int num_layers = 18;
  int attention_head_dim = 64;
  int num_attention_heads = 18;
  int joint_attention_dim = 4096;
  int caption_projection_dim = 1152;  // must equal inner_dim()
  int pooled_projection_dim = 2048;
  int out_channels = 16;         // config's null means in_channels
  int pos_embed_max_size = 96;   // side of the position-embedding grid, in tokens
  std::vector<int> dual_attention_layers;  // blocks with a second, image-only attention (SD3.5)
  std::string qk_norm;                     // "" (config's null) or "rms_norm"

  int inner_dim() const { return num_attention_heads * attention_head_dim; }
  bool IsDualAttention(int block) const;
};

// OK when the model can be built: positive sizes, patch_size 2, qk_norm
// "" or "rms_norm", dual_attention_layers distinct block indices below
// num_layers, caption_projection_dim equal to inner_dim, inner_dim a
// multiple of 4 (the 2-D sin-cos embedding). INVALID_ARGUMENT names the
// field.
absl::Status ValidateSd3TransformerConfig(const Sd3TransformerConfig& config);

// Parses the JSON text and validates it as above (a list or a string of the
// wrong type is INVALID_ARGUMENT naming the field too). Unknown keys
// ("_class_name", …) are ignored.
absl::StatusOr<Sd3TransformerConfig> ParseSd3TransformerConfig(const std::string& json_text);

}  // namespace ditserve::worker::sd3
