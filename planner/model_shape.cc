#include "planner/model_shape.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/long_skips.h"

namespace ditserve::planner {
namespace {

// Weights per token of the blocks the families are made of (h = hidden):
// attention q, k, v and out 4h², a 4× feed-forward 8h².
LayerGroup MmditBlock(const std::string& name, int count, double h, double extra_image) {
  LayerGroup g;
  g.name = name;
  g.count = count;
  g.params_per_image_token = 12 * h * h + extra_image;  // own stream's qkv, out, feed-forward
  g.params_per_text_token = 12 * h * h;                // the text stream's
  g.joint_text = true;
  g.elementwise_passes = 28;
  g.kernels = 44;  // both streams: norms, modulation, q/k norms, RoPE, GEMMs, gates, residuals
  return g;
}

LayerGroup FluxSingleBlock(int count, double h) {
  LayerGroup g;
  g.name = "single";
  g.count = count;
  g.params_per_image_token = 12 * h * h;  // fused qkv + MLP in (7h²), out of attention + MLP (5h²)
  g.params_per_text_token = 12 * h * h;
  g.joint_text = true;
  g.elementwise_passes = 20;
  g.kernels = 22;
  return g;
}

// A cross-attention DiT block: self-attention (4h²), cross-attention q and
// out (2h²) with K/V over the text states, and a feed-forward of `ff` h².
LayerGroup CrossBlock(const std::string& name, int count, double h, double text_width, double ff, bool linear) {
  LayerGroup g;
  g.name = name;
  g.count = count;
  g.params_per_image_token = (6 + ff) * h * h;
  g.params_per_text_token = 2 * text_width * h;
  g.joint_text = false;
  g.cross_attention = true;
  g.linear_attention = linear;
  g.elementwise_passes = 22;
  g.kernels = 30;
  return g;
}

ModelShape Flux(const std::string& name, int text_tokens) {
  ModelShape m;
  m.name = name;
  m.family = "flux";
  m.heads = 24;
  m.head_dim = 128;
  m.hidden = 3072;
  m.patch_size = 2;  // 2×2 latents packed into a token
  m.output_width = 64;
  m.text_tokens = text_tokens;
  m.pooled_width = 768;
  m.transformer_params = 11.9e9;
  m.text_encoder_params = 4.76e9 + 0.123e9;  // T5-XXL encoder, CLIP-L
  m.layers = {MmditBlock("double", 19, 3072, 0), FluxSingleBlock(38, 3072)};
  return m;
}

ModelShape Sd3(const std::string& name, int layers, int heads, int dual, double params) {
  ModelShape m;
  m.name = name;
  m.family = "sd3";
  m.heads = heads;
  m.head_dim = 64;
  m.hidden = heads * 64;
  m.output_width = 64;
  m.text_tokens = 77 + 256;
  m.pooled_width = 2048;
  m.default_cfg = true;
  m.transformer_params = params;
  m.text_encoder_params = 4.76e9 + 0.123e9 + 0.695e9;  // T5-XXL, CLIP-L, CLIP-G
  const double h = m.hidden;
  if (dual > 0) m.layers.push_back(MmditBlock("dual", dual, h, 4 * h * h));
  m.layers.push_back(MmditBlock("joint", layers - dual, h, 0));
  return m;
}

// Weight elements of a text encoder from its config (CLIP: hidden_size,
// intermediate_size, num_hidden_layers; T5: d_model, d_ff, num_heads ×
// d_kv, num_layers, gated feed-forward); 0 when the file is absent.
double TextEncoderParams(const std::string& path) {
  std::ifstream in(path);
  if (!in) return 0;
  std::stringstream text;
  text << in.rdbuf();
  const auto c = nlohmann::json::parse(text.str(), nullptr, false);
  if (c.is_discarded() || !c.is_object()) return 0;
  if (c.contains("d_model")) {
    const double d = c.value("d_model", 0), ff = c.value("d_ff", 0), inner = c.value("num_heads", 0) * c.value("d_kv", 0);
    return c.value("num_layers", 0) * (4 * d * inner + 3 * d * ff);
  }
  const double h = c.value("hidden_size", 0), ff = c.value("intermediate_size", 0);
  return c.value("num_hidden_layers", 0) * (4 * h * h + 2 * h * ff);
}

// A cross-attention DiT's widths and sizes (the layers are the caller's);
// CFG on by default, SDXL's 4-channel VAE.
ModelShape CrossDit(const std::string& name, const std::string& family, int heads, int head_dim, int patch,
                    int output_width, int text_tokens, int text_width, double params, double text_params) {
  ModelShape m;
  m.name = name;
  m.family = family;
  m.heads = heads;
  m.head_dim = head_dim;
  m.hidden = heads * head_dim;
  m.patch_size = patch;
  m.output_width = output_width;
  m.text_tokens = text_tokens;
  m.text_width = text_width;
  m.default_cfg = true;
  m.transformer_params = params;
  m.text_encoder_params = text_params;
  m.vae = {4, {128, 256, 512, 512}, 2, 8};
  return m;
}

}  // namespace

int ModelShape::SkipsBefore(int block) const { return long_skips ? core::LongSkipsBefore(num_blocks(), block) : 0; }

int ModelShape::num_blocks() const {
  int n = 0;
  for (const LayerGroup& g : layers) n += g.count;
  return n;
}

long long ModelShape::image_tokens(int height, int width) const {
  const int p = pixels_per_token();
  return static_cast<long long>(height / p) * (width / p);
}

std::vector<std::string> PresetNames() {
  return {"flux-dev", "flux-schnell", "sd3-medium", "sd3.5-medium", "sd3.5-large", "sana-1600m", "hunyuandit",
          "pixart-sigma"};
}

absl::StatusOr<ModelShape> PresetModel(const std::string& name) {
  if (name == "flux-dev") return Flux(name, 512);
  if (name == "flux-schnell") return Flux(name, 256);
  if (name == "sd3-medium") return Sd3(name, 24, 24, 0, 2.03e9);
  if (name == "sd3.5-medium") return Sd3(name, 24, 24, 13, 2.47e9);
  if (name == "sd3.5-large") return Sd3(name, 38, 38, 0, 8.06e9);
  if (name == "sana-1600m") {
    // Sana_1600M_4Kpx: 20 blocks of linear self-attention, cross-attention
    // to Gemma-2's states (2304 wide) projected to 2240, Mix-FFN (2.5× GLU:
    // 7.5h²); DC-AE f32c32 (32× downscale, patch 1), modelled as an
    // AutoencoderKL of its widths.
    ModelShape m = CrossDit(name, "sana", 70, 32, 1, 32, 300, 2304, 1.6e9, 2.6e9);
    m.vae = {32, {128, 256, 512, 512, 1024, 1024}, 2, 32};
    m.layers = {CrossBlock("block", 20, 2240, 2240, 7.5, /*linear=*/true)};
    return m;
  }
  if (name == "hunyuandit") {
    // HunyuanDiT v1.2: 40 blocks, the last 19 with a long skip (skip_linear
    // 2h → h); text: CLIP (1024 wide, 77 tokens) + mT5 (2048 wide, 256),
    // sent as one 2048-wide sequence (the transformer projects mT5 and
    // pools it itself); 8 output channels (learned variance).
    ModelShape m = CrossDit(name, "hunyuandit", 16, 88, 2, 32, 77 + 256, 2048, 1.5e9, 0.35e9 + 1.6e9);
    const double ff = 2 * 4.3637;
    m.layers = {CrossBlock("block", 21, m.hidden, 1024, ff, false), CrossBlock("skip", 19, m.hidden, 1024, ff + 2, false)};
    m.long_skips = true;
    m.context_width = 1024;
    return m;
  }
  if (name == "pixart-sigma") {
    // PixArt-Σ XL/2 1024: 28 blocks, T5-XXL states projected to 1152.
    ModelShape m = CrossDit(name, "pixart", 16, 72, 2, 16, 300, 4096, 0.61e9, 4.76e9);
    m.layers = {CrossBlock("block", 28, m.hidden, m.hidden, 8, false)};
    return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--preset must be one of ", absl::StrJoin(PresetNames(), ", "), "; got '", name, "'"));
}

absl::StatusOr<ModelShape> ModelFromDirectory(const std::string& model_dir, int max_sequence_length) {
  auto geometry = core::ReadModelGeometry(model_dir);
  if (!geometry.ok()) return geometry.status();
  return ModelFromGeometry(*geometry, model_dir, max_sequence_length);
}

absl::StatusOr<ModelShape> ModelFromGeometry(const core::ModelGeometry& geometry, const std::string& model_dir,
                                             int max_sequence_length) {
  const std::string vae_path = model_dir + "/vae/config.json";
  std::ifstream vae_file(vae_path);
  if (!vae_file) return absl::NotFoundError(absl::StrCat("cannot read ", vae_path));
  std::stringstream vae_text;
  vae_text << vae_file.rdbuf();
  const auto t = nlohmann::json::parse(geometry.transformer_config_json, nullptr, false);
  const auto v = nlohmann::json::parse(vae_text.str(), nullptr, false);
  if (t.is_discarded() || !t.is_object()) return absl::InvalidArgumentError("transformer/config.json is not a JSON object");
  if (v.is_discarded() || !v.is_object()) return absl::InvalidArgumentError(absl::StrCat(vae_path, " is not a JSON object"));
  ModelShape m;
  m.name = model_dir;
  m.family = geometry.family;
  try {
    m.heads = t.at("num_attention_heads").get<int>();
    m.head_dim = t.at("attention_head_dim").get<int>();
    m.vae.latent_channels = v.at("latent_channels").get<int>();
    m.vae.block_out_channels = v.at("block_out_channels").get<std::vector<int>>();
    m.vae.layers_per_block = v.value("layers_per_block", 2);
    if (m.family == "pixart") {
      m.text_width = t.at("caption_channels").get<int>();  // T5's width; no pooled vector
    } else if (m.family == "hunyuandit") {
      // BERT's and mT5's states in one sequence as wide as the wider.
      m.text_width = std::max(t.value("cross_attention_dim", 1024), t.value("cross_attention_dim_t5", 2048));
    } else {
      m.text_width = t.at("joint_attention_dim").get<int>();
      m.pooled_width = t.at("pooled_projection_dim").get<int>();
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": a config lacks a field the planner needs: ", e.what()));
  }
  m.hidden = m.heads * m.head_dim;
  for (const char* encoder : {"text_encoder", "text_encoder_2", "text_encoder_3"}) {
    m.text_encoder_params += TextEncoderParams(absl::StrCat(model_dir, "/", encoder, "/config.json"));
  }
  m.vae.downscale = 1 << (m.vae.block_out_channels.size() - 1);
  m.patch_size = geometry.size_multiple / m.vae.downscale;
  const double h = m.hidden;
  const int t5 = max_sequence_length;
  if (m.family == "pixart" || m.family == "hunyuandit") {
    m.output_width = m.vae.latent_channels * 4;  // the prediction; the variance channels are dropped
    m.default_cfg = true;
    if (m.family == "pixart") {
      // Self-attention, cross-attention to the caption projection (its K/V
      // from hidden-wide states) and a 4h feed-forward. CFG by default; T5
      // 300 (Σ) or 120 (α).
      const int layers = t.value("num_layers", 28);
      m.text_tokens = t5 > 0 ? t5 : geometry.max_sequence_length;
      m.layers = {CrossBlock("block", layers, h, h, 8, false)};
      m.transformer_params = layers * 16 * h * h + m.text_width * h;
    } else {
      // Self-attention, cross-attention to BERT's width, an mlp_ratio feed-
      // forward; blocks past N/2 add skip_linear (2h → h). The text is
      // always text_len + text_len_t5 tokens (a shorter max_sequence_length
      // only pads more).
      const int layers = t.value("num_layers", 40);
      const double kv = t.value("cross_attention_dim", 1024), ff = 2 * t.value("mlp_ratio", 4.0);
      m.text_tokens = t.value("text_len", 77) + t.value("text_len_t5", 256);
      m.layers = {CrossBlock("block", layers / 2 + 1, h, kv, ff, false),
                  CrossBlock("skip", layers / 2 - 1, h, kv, ff + 2, false)};
      m.long_skips = true;
      m.context_width = static_cast<int>(kv);
      m.transformer_params = layers * (6 + ff) * h * h + (layers / 2 - 1) * 2 * h * h + layers * 2 * kv * h;
    }
    std::ifstream scheduler_file(model_dir + "/scheduler/scheduler_config.json");
    std::stringstream scheduler_text;
    scheduler_text << scheduler_file.rdbuf();
    auto scheduler = core::ParseDiscreteSchedulerConfig(scheduler_text.str());
    if (!scheduler.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, "/scheduler/", scheduler.status().message()));
    }
    m.scheduler = *scheduler;
    return m;
  }
  if (m.family == "flux") {
    const int doubles = t.value("num_layers", 19), singles = t.value("num_single_layers", 38);
    m.output_width = t.value("in_channels", 64);
    m.text_tokens = t5 > 0 ? t5 : 512;
    m.layers = {MmditBlock("double", doubles, h, 0), FluxSingleBlock(singles, h)};
    m.transformer_params = (doubles + singles) * 12 * h * h + doubles * 12 * h * h;
  } else {
    const int layers = t.value("num_layers", 24);
    int dual = 0;
    if (t.contains("dual_attention_layers") && t["dual_attention_layers"].is_array()) {
      dual = static_cast<int>(t["dual_attention_layers"].size());
    }
    const int patch = t.value("patch_size", 2);
    m.output_width = t.value("out_channels", 16) * patch * patch;
    m.text_tokens = 77 + (t5 > 0 ? t5 : 256);
    m.default_cfg = true;
    if (dual > 0) m.layers.push_back(MmditBlock("dual", dual, h, 4 * h * h));
    m.layers.push_back(MmditBlock("joint", layers - dual, h, 0));
    m.transformer_params = layers * 24 * h * h + dual * 4 * h * h;
  }
  return m;
}

}  // namespace ditserve::planner
