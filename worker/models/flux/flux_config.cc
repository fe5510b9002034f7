#include "worker/models/flux/flux_config.h"

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ditserve::worker::flux {

absl::StatusOr<FluxTransformerConfig> ParseFluxTransformerConfig(const std::string& json_text) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("transformer config: not a JSON object");
  }
  FluxTransformerConfig c;
  const auto read_int = [&](const char* key, int* out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_number_integer() || j[key].get<int64_t>() < 1 || j[key].get<int64_t>() > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat("transformer config: ", key,
                                                     " must be an integer in [1, 1048576], got ", j[key].dump()));
    }
    *out = j[key].get<int>();
    return absl::OkStatus();
  };
  for (auto [key, out] : {std::pair{"patch_size", &c.patch_size}, {"in_channels", &c.in_channels},
                          {"num_layers", &c.num_layers}, {"num_single_layers", &c.num_single_layers},
                          {"attention_head_dim", &c.attention_head_dim},
                          {"num_attention_heads", &c.num_attention_heads},
                          {"joint_attention_dim", &c.joint_attention_dim},
                          {"pooled_projection_dim", &c.pooled_projection_dim}}) {
    if (absl::Status s = read_int(key, out); !s.ok()) return s;
  }
  c.out_channels = c.in_channels;
  if (absl::Status s = read_int("out_channels", &c.out_channels); !s.ok()) return s;
  if (j.contains("guidance_embeds")) {
    if (!j["guidance_embeds"].is_boolean()) {
      return absl::InvalidArgumentError("transformer config: guidance_embeds must be true or false");
    }
    c.guidance_embeds = j["guidance_embeds"].get<bool>();
  }
  if (j.contains("axes_dims_rope")) {
    if (!j["axes_dims_rope"].is_array() || j["axes_dims_rope"].size() != 3) {
      return absl::InvalidArgumentError("transformer config: axes_dims_rope must be 3 integers");
    }
    c.axes_dims_rope.clear();
    for (const auto& v : j["axes_dims_rope"]) {
      if (!v.is_number_integer() || v.get<int>() < 2 || v.get<int>() % 2 != 0) {
        return absl::InvalidArgumentError("transformer config: axes_dims_rope must be even positive integers");
      }
      c.axes_dims_rope.push_back(v.get<int>());
    }
  }
  int sum = 0;
  for (int a : c.axes_dims_rope) sum += a;
  if (sum != c.attention_head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("transformer config: axes_dims_rope sum to ", sum,
                                                   " but attention_head_dim is ", c.attention_head_dim));
  }
  if (c.patch_size != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "transformer config: patch_size ", c.patch_size, " is not supported (Flux packs 2x2 latents; patch_size is 1)"));
  }
  return c;
}

}  // namespace ditserve::worker::flux
