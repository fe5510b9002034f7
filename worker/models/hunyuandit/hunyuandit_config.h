#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace ditserve::worker::hunyuandit {

// transformer/config.json of a diffusers HunyuanDiT2DModel. Defaults are
// diffusers' constructor defaults; HunyuanDiT v1.2's checkpoint sets 16
// heads of 88, hidden_size 1408, 40 layers, mlp_ratio 4.3637 and no style
// or image-meta-size conditions.
struct HunyuanDiTConfig {
  int num_attention_heads = 16;
  int attention_head_dim = 88;
  int in_channels = 4;
  int patch_size = 2;   // only 2 (the shared 2×2 token packing)
  int sample_size = 32;
  int hidden_size = 1152;  // must equal inner_dim()
  int num_layers = 28;
  double mlp_ratio = 4.0;
  bool learn_sigma = true;  // out_channels = 2·in_channels (the variance half is dropped)
  int cross_attention_dim = 1024;     // the BERT (CLIP) width
  int cross_attention_dim_t5 = 2048;  // the mT5 width
  int pooled_projection_dim = 1024;
  int text_len = 77;      // BERT tokens
  int text_len_t5 = 256;  // mT5 tokens
  bool use_style_cond_and_image_meta_size = true;  // v1.1 and earlier; false from v1.2

  int inner_dim() const { return num_attention_heads * attention_head_dim; }
  int out_channels() const { return learn_sigma ? 2 * in_channels : in_channels; }
  // diffusers' int(inner_dim · mlp_ratio).
  int ff_inner_dim() const { return static_cast<int>(static_cast<double>(inner_dim()) * mlp_ratio); }
  // Tokens of the text stream: BERT's then mT5's.
  int text_tokens() const { return text_len + text_len_t5; }
};

// OK when the model can be built: positive sizes, text_len ≥ 2 ([CLS] and
// [SEP]), an even num_layers (diffusers'
// skip stack runs dry otherwise), patch_size 2, hidden_size
// = inner_dim, attention_head_dim a multiple of 4 (2-D RoPE), 8 | the mT5
// width (the attention pool's heads), a positive feed-forward width.
// INVALID_ARGUMENT names the field.
absl::Status ValidateHunyuanDiTConfig(const HunyuanDiTConfig& config);

// Parses the JSON text and validates it. activation_fn other than
// "gelu-approximate" and norm_type other than "layer_norm" are
// INVALID_ARGUMENT naming the field; unknown keys are ignored.
absl::StatusOr<HunyuanDiTConfig> ParseHunyuanDiTConfig(const std::string& json_text);

}  // namespace ditserve::worker::hunyuandit
