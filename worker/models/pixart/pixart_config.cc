#include "worker/models/pixart/pixart_config.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/models/common/config_fields.h"

namespace ditserve::worker::pixart {
namespace {

using nlohmann::json;

using models::ConfigError;
using models::ExpectConfigValue;
using models::ReadConfigBool;
using models::ReadConfigInt;
using models::ReadConfigNumber;

}  // namespace

absl::Status ValidatePixArtTransformerConfig(const PixArtTransformerConfig& c) {
  for (auto [key, value] : {std::pair{"num_attention_heads", c.num_attention_heads},
                            {"attention_head_dim", c.attention_head_dim}, {"in_channels", c.in_channels},
                            {"out_channels", c.out_channels}, {"num_layers", c.num_layers},
                            {"cross_attention_dim", c.cross_attention_dim}, {"sample_size", c.sample_size},
                            {"caption_channels", c.caption_channels}}) {
    if (value < 1 || value > (1 << 20)) return ConfigError(absl::StrCat(key, " must be in [1, 1048576], got ", value));
  }
  if (c.patch_size != 2) {
    return ConfigError(absl::StrCat("patch_size ", c.patch_size, " is not supported (tokens are 2x2 latent patches)"));
  }
  if (static_cast<int64_t>(c.num_attention_heads) * c.attention_head_dim > (1 << 20)) {
    return ConfigError("num_attention_heads × attention_head_dim must be at most 1048576");
  }
  if (c.cross_attention_dim != c.inner_dim()) {
    return ConfigError(absl::StrCat("cross_attention_dim ", c.cross_attention_dim, " must equal num_attention_heads × ",
                              "attention_head_dim = ", c.inner_dim(), " (the caption projection's width)"));
  }
  if (c.inner_dim() % 4 != 0) return ConfigError("num_attention_heads × attention_head_dim must be a multiple of 4");
  if (c.use_additional_conditions && c.inner_dim() % 3 != 0) {
    return ConfigError("with use_additional_conditions, num_attention_heads × attention_head_dim must be a multiple of 3");
  }
  if (c.out_channels != c.in_channels && c.out_channels != 2 * c.in_channels) {
    return ConfigError(absl::StrCat("out_channels ", c.out_channels, " must be in_channels or twice it (learned variance)"));
  }
  if (!(c.norm_eps > 0 && c.norm_eps < 1)) return ConfigError("norm_eps must be in (0, 1)");
  if (!(c.interpolation_scale > 0)) return ConfigError("interpolation_scale must be positive");
  return absl::OkStatus();
}

absl::StatusOr<PixArtTransformerConfig> ParsePixArtTransformerConfig(const std::string& json_text) {
  auto parsed = models::ParseConfigObject(json_text);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  PixArtTransformerConfig c;
  for (auto [key, field] : {std::pair{"num_attention_heads", &c.num_attention_heads},
                            {"attention_head_dim", &c.attention_head_dim}, {"in_channels", &c.in_channels},
                            {"num_layers", &c.num_layers}, {"cross_attention_dim", &c.cross_attention_dim},
                            {"sample_size", &c.sample_size}, {"patch_size", &c.patch_size}}) {
    if (absl::Status s = ReadConfigInt(j, key, *field); !s.ok()) return s;
  }
  c.out_channels = c.in_channels;
  if (absl::Status s = ReadConfigInt(j, "out_channels", c.out_channels); !s.ok()) return s;
  if (!j.contains("caption_channels") || j["caption_channels"].is_null()) {
    return ConfigError("caption_channels is required (the T5 width the caption projection takes)");
  }
  if (absl::Status s = ReadConfigInt(j, "caption_channels", c.caption_channels); !s.ok()) return s;
  if (absl::Status s = ReadConfigBool(j, "attention_bias", c.attention_bias); !s.ok()) return s;
  if (absl::Status s = ReadConfigNumber(j, "norm_eps", c.norm_eps); !s.ok()) return s;
  c.interpolation_scale = std::max(c.sample_size / 64, 1);
  if (absl::Status s = ReadConfigNumber(j, "interpolation_scale", c.interpolation_scale); !s.ok()) return s;
  c.use_additional_conditions = c.sample_size == 128;
  if (absl::Status s = ReadConfigBool(j, "use_additional_conditions", c.use_additional_conditions); !s.ok()) return s;
  for (auto [key, expected] : {std::pair<const char*, json>{"norm_type", "ada_norm_single"},
                               {"norm_elementwise_affine", false},
                               {"activation_fn", "gelu-approximate"},
                               {"attention_type", "default"}}) {
    if (absl::Status s = ExpectConfigValue(j, key, expected); !s.ok()) return s;
  }
  if (absl::Status s = ValidatePixArtTransformerConfig(c); !s.ok()) return s;
  return c;
}

}  // namespace ditserve::worker::pixart
