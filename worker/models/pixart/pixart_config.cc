#include "worker/models/pixart/pixart_config.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ditserve::worker::pixart {
namespace {

using nlohmann::json;

absl::Status Error(const std::string& what) { return absl::InvalidArgumentError(absl::StrCat("transformer config: ", what)); }

absl::Status ReadInt(const json& j, const char* key, int& out) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_number_integer()) return Error(absl::StrCat(key, " must be an integer"));
  const int64_t v = j[key].get<int64_t>();
  if (v < 1 || v > (1 << 20)) return Error(absl::StrCat(key, " must be an integer in [1, 1048576], got ", v));
  out = static_cast<int>(v);
  return absl::OkStatus();
}

// A string field that must be absent, null or `expected`.
absl::Status Expect(const json& j, const char* key, const json& expected) {
  if (!j.contains(key) || j[key].is_null() || j[key] == expected) return absl::OkStatus();
  return Error(absl::StrCat(key, " = ", j[key].dump(), " is not supported (only ", expected.dump(), ")"));
}

}  // namespace

absl::Status ValidatePixArtTransformerConfig(const PixArtTransformerConfig& c) {
  for (auto [key, value] : {std::pair{"num_attention_heads", c.num_attention_heads},
                            {"attention_head_dim", c.attention_head_dim}, {"in_channels", c.in_channels},
                            {"out_channels", c.out_channels}, {"num_layers", c.num_layers},
                            {"cross_attention_dim", c.cross_attention_dim}, {"sample_size", c.sample_size},
                            {"caption_channels", c.caption_channels}}) {
    if (value < 1 || value > (1 << 20)) return Error(absl::StrCat(key, " must be in [1, 1048576], got ", value));
  }
  if (c.patch_size != 2) {
    return Error(absl::StrCat("patch_size ", c.patch_size, " is not supported (tokens are 2x2 latent patches)"));
  }
  if (static_cast<int64_t>(c.num_attention_heads) * c.attention_head_dim > (1 << 20)) {
    return Error("num_attention_heads × attention_head_dim must be at most 1048576");
  }
  if (c.cross_attention_dim != c.inner_dim()) {
    return Error(absl::StrCat("cross_attention_dim ", c.cross_attention_dim, " must equal num_attention_heads × ",
                              "attention_head_dim = ", c.inner_dim(), " (the caption projection's width)"));
  }
  if (c.inner_dim() % 4 != 0) return Error("num_attention_heads × attention_head_dim must be a multiple of 4");
  if (c.use_additional_conditions && c.inner_dim() % 3 != 0) {
    return Error("with use_additional_conditions, num_attention_heads × attention_head_dim must be a multiple of 3");
  }
  if (c.out_channels != c.in_channels && c.out_channels != 2 * c.in_channels) {
    return Error(absl::StrCat("out_channels ", c.out_channels, " must be in_channels or twice it (learned variance)"));
  }
  if (!(c.norm_eps > 0 && c.norm_eps < 1)) return Error("norm_eps must be in (0, 1)");
  if (!(c.interpolation_scale > 0)) return Error("interpolation_scale must be positive");
  return absl::OkStatus();
}

absl::StatusOr<PixArtTransformerConfig> ParsePixArtTransformerConfig(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const std::exception& e) {
    return Error(absl::StrCat("not JSON: ", e.what()));
  }
  if (!j.is_object()) return Error("must be a JSON object");
  PixArtTransformerConfig c;
  for (auto [key, field] : {std::pair{"num_attention_heads", &c.num_attention_heads},
                            {"attention_head_dim", &c.attention_head_dim}, {"in_channels", &c.in_channels},
                            {"num_layers", &c.num_layers}, {"cross_attention_dim", &c.cross_attention_dim},
                            {"sample_size", &c.sample_size}, {"patch_size", &c.patch_size}}) {
    if (absl::Status s = ReadInt(j, key, *field); !s.ok()) return s;
  }
  c.out_channels = c.in_channels;
  if (absl::Status s = ReadInt(j, "out_channels", c.out_channels); !s.ok()) return s;
  if (!j.contains("caption_channels") || j["caption_channels"].is_null()) {
    return Error("caption_channels is required (the T5 width the caption projection takes)");
  }
  if (absl::Status s = ReadInt(j, "caption_channels", c.caption_channels); !s.ok()) return s;
  if (j.contains("attention_bias") && !j["attention_bias"].is_null()) {
    if (!j["attention_bias"].is_boolean()) return Error("attention_bias must be true or false");
    c.attention_bias = j["attention_bias"].get<bool>();
  }
  if (j.contains("norm_eps") && !j["norm_eps"].is_null()) {
    if (!j["norm_eps"].is_number()) return Error("norm_eps must be a number");
    c.norm_eps = j["norm_eps"].get<double>();
  }
  c.interpolation_scale = std::max(c.sample_size / 64, 1);
  if (j.contains("interpolation_scale") && !j["interpolation_scale"].is_null()) {
    if (!j["interpolation_scale"].is_number()) return Error("interpolation_scale must be a number");
    c.interpolation_scale = j["interpolation_scale"].get<double>();
  }
  c.use_additional_conditions = c.sample_size == 128;
  if (j.contains("use_additional_conditions") && !j["use_additional_conditions"].is_null()) {
    if (!j["use_additional_conditions"].is_boolean()) return Error("use_additional_conditions must be true or false");
    c.use_additional_conditions = j["use_additional_conditions"].get<bool>();
  }
  for (auto [key, expected] : {std::pair<const char*, json>{"norm_type", "ada_norm_single"},
                               {"norm_elementwise_affine", false},
                               {"activation_fn", "gelu-approximate"},
                               {"attention_type", "default"}}) {
    if (absl::Status s = Expect(j, key, expected); !s.ok()) return s;
  }
  if (absl::Status s = ValidatePixArtTransformerConfig(c); !s.ok()) return s;
  return c;
}

}  // namespace ditserve::worker::pixart
