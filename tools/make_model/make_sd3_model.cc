#include "tools/make_model/make_sd3_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include "absl/strings/str_cat.h"
#include "tools/make_model/sd3_directory_writer.h"
#include "worker/models/sd3/sd3_transformer.h"

namespace ditserve::tools::make_model {
namespace {

struct Preset {
  worker::sd3::Sd3TransformerConfig transformer;
  Sd3TextComponentsSpec text;
  worker::vae::VaeConfig vae;
};

worker::text::ClipTextConfig Clip(int hidden, int intermediate, int layers, int heads, const char* act) {
  worker::text::ClipTextConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.projection_dim = hidden;  // as SD3's CLIPs (768, 1280)
  c.hidden_act = act;
  return c;
}

absl::StatusOr<Preset> GetPreset(const std::string& variant, const std::string& name) {
  if (variant != "sd3" && variant != "sd3.5-medium" && variant != "sd3.5-large") {
    return absl::InvalidArgumentError(
        absl::StrCat("--variant must be sd3, sd3.5-medium or sd3.5-large, got '", variant, "'"));
  }
  Preset p;
  worker::sd3::Sd3TransformerConfig& t = p.transformer;
  // Real layouts: SD3-medium 24 blocks, pos_embed_max_size 192; SD3.5-large
  // 38 blocks, qk_norm, 192; SD3.5-medium 24 blocks, qk_norm, dual
  // attention in blocks 0-12, 384. Here the blocks are few, and the
  // position grid covers 1024 px (tiny) / 1536 px (small), twice that for
  // SD3.5-medium.
  int dual_blocks = 0;
  if (name == "tiny") {
    t.num_layers = 4;
    t.num_attention_heads = 4;  // room for Ulysses 4 and PipeFusion 4
    t.attention_head_dim = 16;
    t.sample_size = 8;  // 64 px
    t.pos_embed_max_size = 64;
    dual_blocks = 2;
    p.text.clip_l = Clip(32, 64, 2, 2, "quick_gelu");
    p.text.clip_g = Clip(64, 128, 2, 2, "gelu");
    p.text.t5 = {0, 128, 16, 256, 2, 4, 32, 128, 1e-6, "gelu_new"};
    p.vae.block_out_channels = {8, 8, 16, 16};
    p.vae.norm_num_groups = 4;
    p.vae.sample_size = 64;
  } else if (name == "small") {
    t.num_layers = 6;
    t.num_attention_heads = 8;
    t.attention_head_dim = 64;
    t.sample_size = 64;  // 512 px: 1024 image tokens
    t.pos_embed_max_size = 96;
    dual_blocks = 3;
    p.text.clip_l = Clip(128, 512, 2, 2, "quick_gelu");
    p.text.clip_g = Clip(256, 1024, 2, 4, "gelu");
    p.text.t5 = {0, 512, 64, 1024, 2, 8, 32, 128, 1e-6, "gelu_new"};
    p.text.bpe_merges = 400;
    p.vae.block_out_channels = {32, 64, 64, 64};
    p.vae.norm_num_groups = 16;
    p.vae.sample_size = 512;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--preset must be tiny or small for sd3, got '", name, "'"));
  }
  if (variant != "sd3") t.qk_norm = "rms_norm";
  if (variant == "sd3.5-medium") {
    for (int i = 0; i < dual_blocks; ++i) t.dual_attention_layers.push_back(i);
    t.pos_embed_max_size *= 2;
  }
  t.caption_projection_dim = t.inner_dim();
  p.vae.latent_channels = 16;
  p.vae.layers_per_block = 1;
  p.vae.scaling_factor = 1.5305;
  p.vae.shift_factor = 0.0609;
  p.vae.use_quant_conv = false;
  p.vae.use_post_quant_conv = false;
  t.in_channels = t.out_channels = p.vae.latent_channels;
  return p;
}

}  // namespace

absl::Status MakeSd3Model(const MakeSd3Options& o) {
  auto preset = GetPreset(o.variant, o.preset);
  if (!preset.ok()) return preset.status();
  if (o.dtype != "f32" && o.dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be f32 or bf16, got '", o.dtype, "'"));
  }
  if (o.shards < 1 || o.shards > 64) return absl::InvalidArgumentError("--shards must be in [1, 64]");
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  const at::ScalarType dtype = o.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const std::string& d = o.out_dir;
  Preset p = *preset;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  if (absl::Status s = WriteSd3TextComponents(d, p.text, gen, dtype); !s.ok()) return s;

  p.transformer.joint_attention_dim = p.text.t5.d_model;
  p.transformer.pooled_projection_dim = p.text.clip_l.projection_dim + p.text.clip_g.projection_dim;
  auto transformer = worker::sd3::Sd3Transformer::Create(p.transformer, at::kFloat);
  if (!transformer.ok()) return transformer.status();
  NamedTensors params = ModuleParameters((*transformer)->module());
  InitialiseRandom(params, gen, 0.02);
  for (auto& kv : ModuleBuffers((*transformer)->module())) params.push_back(kv);  // pos_embed.pos_embed
  if (absl::Status s = WriteSd3Transformer(d, p.transformer, params, dtype, o.shards); !s.ok()) return s;

  if (absl::Status s = WriteRandomVae(d, p.vae, gen, dtype); !s.ok()) return s;

  worker::flux::FlowMatchSchedulerConfig scheduler;
  scheduler.shift = 3.0;
  if (absl::Status s = WriteScheduler(d, scheduler); !s.ok()) return s;
  return WriteSd3ModelIndex(d);
}

}  // namespace ditserve::tools::make_model
