#include "worker/models/sd3/sd3_config.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ditserve::worker::sd3 {

bool Sd3TransformerConfig::IsDualAttention(int block) const {
  return std::find(dual_attention_layers.begin(), dual_attention_layers.end(), block) != dual_attention_layers.end();
}

absl::Status ValidateSd3TransformerConfig(const Sd3TransformerConfig& c) {
  constexpr int kMax = 1 << 20;
  for (auto [key, value] : {std::pair{"sample_size", c.sample_size}, {"patch_size", c.patch_size},
                            {"in_channels", c.in_channels}, {"num_layers", c.num_layers},
                            {"attention_head_dim", c.attention_head_dim},
                            {"num_attention_heads", c.num_attention_heads},
                            {"joint_attention_dim", c.joint_attention_dim},
                            {"caption_projection_dim", c.caption_projection_dim},
                            {"pooled_projection_dim", c.pooled_projection_dim}, {"out_channels", c.out_channels},
                            {"pos_embed_max_size", c.pos_embed_max_size}}) {
    if (value < 1 || value > kMax) {
      return absl::InvalidArgumentError(
          absl::StrCat("transformer config: ", key, " must be an integer in [1, 1048576], got ", value));
    }
  }
  if (c.patch_size != 2) {
    return absl::InvalidArgumentError(absl::StrCat("transformer config: patch_size ", c.patch_size,
                                                   " is not supported (tokens are 2x2 latent patches)"));
  }
  if (!c.qk_norm.empty() && c.qk_norm != "rms_norm") {
    return absl::InvalidArgumentError(
        absl::StrCat("transformer config: qk_norm \"", c.qk_norm, "\" is not supported (null or \"rms_norm\")"));
  }
  for (size_t i = 0; i < c.dual_attention_layers.size(); ++i) {
    const int block = c.dual_attention_layers[i];
    if (block < 0 || block >= c.num_layers ||
        std::find(c.dual_attention_layers.begin(), c.dual_attention_layers.begin() + i, block) !=
            c.dual_attention_layers.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat("transformer config: dual_attention_layers must be distinct ",
                                                     "block indices in [0, ", c.num_layers, "), got ", block));
    }
  }
  if (static_cast<int64_t>(c.num_attention_heads) * c.attention_head_dim > kMax) {
    return absl::InvalidArgumentError(
        "transformer config: num_attention_heads × attention_head_dim must be at most 1048576");
  }
  if (c.caption_projection_dim != c.inner_dim()) {
    return absl::InvalidArgumentError(
        absl::StrCat("transformer config: caption_projection_dim ", c.caption_projection_dim,
                     " must equal num_attention_heads × attention_head_dim = ", c.inner_dim(),
                     " (the text and image streams share one width)"));
  }
  if (c.inner_dim() % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("transformer config: num_attention_heads × attention_head_dim = ",
                                                   c.inner_dim(),
                                                   " must be a multiple of 4 (the 2-D sin-cos position embedding)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Sd3TransformerConfig> ParseSd3TransformerConfig(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("transformer config: not a JSON object");
  }
  Sd3TransformerConfig c;
  const auto read_int = [&](const char* key, int* out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_number_integer() || j[key].get<int64_t>() < 1 || j[key].get<int64_t>() > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat("transformer config: ", key,
                                                     " must be an integer in [1, 1048576], got ", j[key].dump()));
    }
    *out = j[key].get<int>();
    return absl::OkStatus();
  };
  for (auto [key, out] : {std::pair{"sample_size", &c.sample_size}, {"patch_size", &c.patch_size},
                          {"in_channels", &c.in_channels}, {"num_layers", &c.num_layers},
                          {"attention_head_dim", &c.attention_head_dim},
                          {"num_attention_heads", &c.num_attention_heads},
                          {"joint_attention_dim", &c.joint_attention_dim},
                          {"caption_projection_dim", &c.caption_projection_dim},
                          {"pooled_projection_dim", &c.pooled_projection_dim}}) {
    if (absl::Status s = read_int(key, out); !s.ok()) return s;
  }
  c.out_channels = c.in_channels;
  if (absl::Status s = read_int("out_channels", &c.out_channels); !s.ok()) return s;
  if (j.contains("pos_embed_max_size") && j["pos_embed_max_size"].is_null()) {
    return absl::InvalidArgumentError(
        "transformer config: pos_embed_max_size null (an uncropped position embedding) is not supported");
  }
  if (absl::Status s = read_int("pos_embed_max_size", &c.pos_embed_max_size); !s.ok()) return s;
  if (j.contains("qk_norm") && !j["qk_norm"].is_null()) {
    if (!j["qk_norm"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("transformer config: qk_norm ", j["qk_norm"].dump(),
                                                     " is not supported (null or \"rms_norm\")"));
    }
    c.qk_norm = j["qk_norm"].get<std::string>();
  }
  if (j.contains("dual_attention_layers") && !j["dual_attention_layers"].is_null()) {
    const nlohmann::json& layers = j["dual_attention_layers"];
    if (!layers.is_array()) {
      return absl::InvalidArgumentError("transformer config: dual_attention_layers must be a list of block indices");
    }
    for (const auto& v : layers) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1 << 20)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "transformer config: dual_attention_layers must be a list of block indices, got ", layers.dump()));
      }
      c.dual_attention_layers.push_back(v.get<int>());
    }
  }
  if (absl::Status s = ValidateSd3TransformerConfig(c); !s.ok()) return s;
  return c;
}

}  // namespace ditserve::worker::sd3
