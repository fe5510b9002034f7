#include "worker/models/hunyuandit/hunyuandit_config.h"

#include <cstdint>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/common/config_fields.h"

namespace ditserve::worker::hunyuandit {
namespace {

using nlohmann::json;

using models::ConfigError;
using models::ReadConfigBool;
using models::ReadConfigInt;

}  // namespace

absl::Status ValidateHunyuanDiTConfig(const HunyuanDiTConfig& c) {
  for (auto [key, value] : {std::pair{"num_attention_heads", c.num_attention_heads},
                            {"attention_head_dim", c.attention_head_dim}, {"in_channels", c.in_channels},
                            {"sample_size", c.sample_size}, {"hidden_size", c.hidden_size},
                            {"num_layers", c.num_layers}, {"cross_attention_dim", c.cross_attention_dim},
                            {"cross_attention_dim_t5", c.cross_attention_dim_t5},
                            {"pooled_projection_dim", c.pooled_projection_dim}, {"text_len", c.text_len},
                            {"text_len_t5", c.text_len_t5}}) {
    if (value < 1 || value > (1 << 20)) return ConfigError(absl::StrCat(key, " must be in [1, 1048576], got ", value));
  }
  if (c.text_len < 2) {
    return ConfigError(absl::StrCat("text_len ", c.text_len, " must be at least 2 (BERT's [CLS] and [SEP])"));
  }
  if (c.num_layers % 2 != 0) {
    return ConfigError(absl::StrCat("num_layers ", c.num_layers,
                              " must be even (the long skips pair block i > N/2 with block N-1-i)"));
  }
  if (c.patch_size != 2) {
    return ConfigError(absl::StrCat("patch_size ", c.patch_size, " is not supported (tokens are 2x2 latent patches)"));
  }
  if (static_cast<int64_t>(c.num_attention_heads) * c.attention_head_dim > (1 << 20)) {
    return ConfigError("num_attention_heads × attention_head_dim must be at most 1048576");
  }
  if (c.hidden_size != c.inner_dim()) {
    return ConfigError(absl::StrCat("hidden_size ", c.hidden_size, " must equal num_attention_heads × attention_head_dim = ",
                              c.inner_dim()));
  }
  if (c.attention_head_dim % 4 != 0) {
    return ConfigError(absl::StrCat("attention_head_dim ", c.attention_head_dim, " must be a multiple of 4 (2-D RoPE)"));
  }
  if (c.cross_attention_dim_t5 % 8 != 0) {
    return ConfigError(absl::StrCat("cross_attention_dim_t5 ", c.cross_attention_dim_t5,
                              " must be a multiple of 8 (the attention pool's 8 heads)"));
  }
  if (!(c.mlp_ratio > 0 && c.mlp_ratio <= 64) || c.ff_inner_dim() < 1) {
    return ConfigError(absl::StrCat("mlp_ratio must give a feed-forward width of at least 1, got ", c.mlp_ratio));
  }
  return absl::OkStatus();
}

absl::StatusOr<HunyuanDiTConfig> ParseHunyuanDiTConfig(const std::string& json_text) {
  auto parsed = models::ParseConfigObject(json_text);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  HunyuanDiTConfig c;
  for (auto [key, field] : {std::pair{"num_attention_heads", &c.num_attention_heads},
                            {"attention_head_dim", &c.attention_head_dim}, {"in_channels", &c.in_channels},
                            {"patch_size", &c.patch_size}, {"sample_size", &c.sample_size},
                            {"hidden_size", &c.hidden_size}, {"num_layers", &c.num_layers},
                            {"cross_attention_dim", &c.cross_attention_dim},
                            {"cross_attention_dim_t5", &c.cross_attention_dim_t5},
                            {"pooled_projection_dim", &c.pooled_projection_dim}, {"text_len", &c.text_len},
                            {"text_len_t5", &c.text_len_t5}}) {
    if (absl::Status s = ReadConfigInt(j, key, *field); !s.ok()) return s;
  }
  if (!j.contains("in_channels") || j["in_channels"].is_null()) return ConfigError("in_channels is required");
  if (absl::Status s = models::ReadConfigNumber(j, "mlp_ratio", c.mlp_ratio); !s.ok()) return s;
  if (absl::Status s = ReadConfigBool(j, "learn_sigma", c.learn_sigma); !s.ok()) return s;
  if (absl::Status s = ReadConfigBool(j, "use_style_cond_and_image_meta_size", c.use_style_cond_and_image_meta_size);
      !s.ok()) {
    return s;
  }
  for (auto [key, expected] : {std::pair<const char*, json>{"activation_fn", "gelu-approximate"},
                               {"norm_type", "layer_norm"}}) {
    if (absl::Status s = models::ExpectConfigValue(j, key, expected); !s.ok()) return s;
  }
  if (absl::Status s = ValidateHunyuanDiTConfig(c); !s.ok()) return s;
  return c;
}

}  // namespace ditserve::worker::hunyuandit
