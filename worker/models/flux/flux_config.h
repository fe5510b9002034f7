#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ditserve::worker::flux {

// transformer/config.json of a diffusers FluxTransformer2DModel.
struct FluxTransformerConfig {
  int patch_size = 1;
  int in_channels = 64;
  int out_channels = 64;  // config's null means in_channels
  int num_layers = 19;
  int num_single_layers = 38;
  int attention_head_dim = 128;
  int num_attention_heads = 24;
  int joint_attention_dim = 4096;
  int pooled_projection_dim = 768;
  bool guidance_embeds = false;
  std::vector<int> axes_dims_rope = {16, 56, 56};

  int inner_dim() const { return num_attention_heads * attention_head_dim; }
};

// Parses and validates the JSON text: positive sizes, even RoPE axes that
// sum to attention_head_dim. INVALID_ARGUMENT names the field.
absl::StatusOr<FluxTransformerConfig> ParseFluxTransformerConfig(const std::string& json_text);

}  // namespace ditserve::worker::flux
