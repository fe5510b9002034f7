#include "tools/make_model/make_flux_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tools/make_model/flux_directory_writer.h"
#include "worker/models/flux/flux_transformer.h"

namespace ditserve::tools::make_model {
namespace {

struct Preset {
  worker::flux::FluxTransformerConfig transformer;
  worker::text::ClipTextConfig clip;
  worker::text::T5Config t5;
  worker::vae::VaeConfig vae;
  int bpe_merges = 200;
  int spm_vocab = 64;
};

absl::StatusOr<Preset> GetPreset(const std::string& name) {
  Preset p;
  if (name == "tiny") {
    p.transformer = {1, 16, 16, 2, 2, 16, 4, 32, 32, true, {4, 6, 6}};  // 4 heads, 4 blocks: room for Ulysses 4 and PipeFusion 4
    p.clip.hidden_size = 32;
    p.clip.intermediate_size = 64;
    p.clip.num_hidden_layers = 1;
    p.clip.num_attention_heads = 2;
    p.t5 = {0, 32, 8, 64, 1, 4, 32, 128, 1e-6, "gelu_new"};
    p.vae.latent_channels = 4;
    p.vae.block_out_channels = {8, 8, 16, 16};
    p.vae.layers_per_block = 1;
    p.vae.norm_num_groups = 4;
    p.vae.sample_size = 128;
  } else if (name == "small") {
    p.transformer = {1, 64, 64, 2, 4, 64, 8, 256, 256, true, {8, 28, 28}};
    p.clip.hidden_size = 256;
    p.clip.intermediate_size = 1024;
    p.clip.num_hidden_layers = 2;
    p.clip.num_attention_heads = 4;
    p.t5 = {0, 256, 32, 512, 2, 8, 32, 128, 1e-6, "gelu_new"};
    p.vae.latent_channels = 16;
    p.vae.block_out_channels = {32, 64, 64, 64};
    p.vae.layers_per_block = 1;
    p.vae.norm_num_groups = 16;
    p.vae.sample_size = 512;  // 1024 image tokens
    p.bpe_merges = 400;
  } else if (name == "flux-dev") {
    p.transformer = {1, 64, 64, 19, 38, 128, 24, 4096, 768, true, {16, 56, 56}};
    p.clip.hidden_size = 768;
    p.clip.intermediate_size = 3072;
    p.clip.num_hidden_layers = 12;
    p.clip.num_attention_heads = 12;
    p.t5 = {0, 4096, 64, 10240, 24, 64, 32, 128, 1e-6, "gelu_new"};
    p.vae.latent_channels = 16;
    p.vae.block_out_channels = {128, 256, 512, 512};
    p.vae.layers_per_block = 2;
    p.vae.norm_num_groups = 32;
    p.bpe_merges = 400;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--preset must be tiny, small or flux-dev, got '", name, "'"));
  }
  p.vae.use_post_quant_conv = false;
  return p;
}

}  // namespace

absl::Status MakeFluxModel(const MakeFluxOptions& o) {
  auto preset = GetPreset(o.preset);
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
  TextComponentsSpec text{p.clip, p.t5, p.bpe_merges, p.spm_vocab};
  if (absl::Status s = WriteTextComponents(d, text, gen, dtype); !s.ok()) return s;

  p.transformer.joint_attention_dim = text.t5.d_model;
  p.transformer.pooled_projection_dim = text.clip.hidden_size;
  p.transformer.in_channels = p.transformer.out_channels = 4 * p.vae.latent_channels;
  auto transformer = worker::flux::FluxTransformer::Create(p.transformer, at::kFloat);
  if (!transformer.ok()) return transformer.status();
  NamedTensors flux_params = ModuleParameters((*transformer)->module());
  InitialiseRandom(flux_params, gen, 0.02);
  if (absl::Status s = WriteTransformer(d, p.transformer, flux_params, dtype, o.shards); !s.ok()) return s;

  if (absl::Status s = WriteRandomVae(d, p.vae, gen, dtype); !s.ok()) return s;

  worker::flux::FlowMatchSchedulerConfig scheduler;
  scheduler.shift = 3.0;
  scheduler.use_dynamic_shifting = true;
  if (absl::Status s = WriteScheduler(d, scheduler); !s.ok()) return s;
  return WriteModelIndex(d);
}

}  // namespace ditserve::tools::make_model
