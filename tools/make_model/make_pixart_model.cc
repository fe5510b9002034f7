#include "tools/make_model/make_pixart_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tools/make_model/directory_writer.h"
#include "worker/models/pixart/pixart_transformer.h"
#include "worker/weights/safetensors_writer.h"

namespace ditserve::tools::make_model {
namespace {

using json = nlohmann::ordered_json;

struct Preset {
  worker::pixart::PixArtTransformerConfig transformer;
  worker::text::T5Config t5;
  int spm_vocab = 64;
  worker::vae::VaeConfig vae;
};

absl::StatusOr<Preset> GetPreset(const std::string& family, const std::string& name) {
  const bool alpha = family == "pixart-alpha";
  Preset p;
  worker::pixart::PixArtTransformerConfig& t = p.transformer;
  if (name == "tiny") {
    t.num_layers = 4;
    t.num_attention_heads = 4;  // room for Ulysses 4 and PipeFusion 4
    t.attention_head_dim = 24;  // inner 96: a multiple of 3 (α's size embeddings) and 4
    t.sample_size = 8;          // 64 px
    p.t5 = {0, 128, 16, 256, 2, 4, 32, 128, 1e-6, "gelu_new"};
    p.vae.block_out_channels = {8, 8, 16, 16};
    p.vae.norm_num_groups = 4;
    p.vae.sample_size = 64;
  } else if (name == "small") {
    t.num_layers = 6;
    t.num_attention_heads = 8;
    t.attention_head_dim = 72;
    t.sample_size = 64;  // 512 px: 1024 image tokens
    p.t5 = {0, 512, 64, 1024, 2, 8, 32, 128, 1e-6, "gelu_new"};
    p.spm_vocab = 400;
    p.vae.block_out_channels = {32, 64, 64, 64};
    p.vae.norm_num_groups = 16;
    p.vae.sample_size = 512;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--preset must be tiny or small for ", family, ", got '", name, "'"));
  }
  if (alpha) {
    // PixArt-α-1024's layout: sample_size 128 turns the micro-conditions on
    // (and the position interpolation scale to 2); requests still pick
    // their size.
    t.sample_size = 128;
  }
  t.interpolation_scale = std::max(t.sample_size / 64, 1);
  t.use_additional_conditions = t.sample_size == 128;
  t.cross_attention_dim = t.inner_dim();
  t.in_channels = 4;
  t.out_channels = 8;
  p.vae.latent_channels = 4;
  p.vae.layers_per_block = 1;
  p.vae.scaling_factor = alpha ? 0.18215 : 0.13025;
  p.vae.shift_factor = 0.0;
  p.vae.use_quant_conv = true;
  p.vae.use_post_quant_conv = true;
  return p;
}

absl::Status WriteTransformer(const std::string& dir, const worker::pixart::PixArtTransformerConfig& t,
                              const NamedTensors& params, at::ScalarType dtype) {
  const std::string d = dir + "/transformer";
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  if (absl::Status s = worker::weights::WriteSafetensorsCheckpoint(d, "diffusion_pytorch_model", Cast(params, dtype), 1);
      !s.ok()) {
    return s;
  }
  return WriteJson(d + "/config.json",
                   {{"_class_name", "PixArtTransformer2DModel"}, {"_diffusers_version", "0.42.1"},
                    {"activation_fn", "gelu-approximate"}, {"attention_bias", t.attention_bias},
                    {"attention_head_dim", t.attention_head_dim}, {"attention_type", "default"},
                    {"caption_channels", t.caption_channels}, {"cross_attention_dim", t.cross_attention_dim},
                    {"dropout", 0.0}, {"in_channels", t.in_channels}, {"interpolation_scale", nullptr},
                    {"norm_elementwise_affine", false}, {"norm_eps", t.norm_eps}, {"norm_num_groups", 32},
                    {"norm_type", "ada_norm_single"}, {"num_attention_heads", t.num_attention_heads},
                    {"num_embeds_ada_norm", 1000}, {"num_layers", t.num_layers}, {"out_channels", t.out_channels},
                    {"patch_size", t.patch_size}, {"sample_size", t.sample_size}, {"upcast_attention", false},
                    {"use_additional_conditions", nullptr}});
}

// The PixArt checkpoints' scheduler_config.json, written as diffusers
// writes it (Python's json: lambda_min_clipped is a bare -Infinity).
absl::Status WriteScheduler(const std::string& dir) {
  if (absl::Status s = CreateDir(dir + "/scheduler"); !s.ok()) return s;
  const std::string path = dir + "/scheduler/scheduler_config.json";
  std::ofstream out(path, std::ios::binary);
  out << R"({
  "_class_name": "DPMSolverMultistepScheduler",
  "_diffusers_version": "0.42.1",
  "algorithm_type": "dpmsolver++",
  "beta_end": 0.02,
  "beta_schedule": "linear",
  "beta_start": 0.0001,
  "dynamic_thresholding_ratio": 0.995,
  "euler_at_final": false,
  "final_sigmas_type": "zero",
  "lambda_min_clipped": -Infinity,
  "lower_order_final": true,
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "sample_max_value": 1.0,
  "solver_order": 2,
  "solver_type": "midpoint",
  "steps_offset": 0,
  "thresholding": false,
  "timestep_spacing": "linspace",
  "trained_betas": null,
  "use_karras_sigmas": false,
  "use_lu_lambdas": false,
  "variance_type": null
}
)";
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status WriteModelIndex(const std::string& dir, bool alpha) {
  return WriteJson(dir + "/model_index.json",
                   {{"_class_name", alpha ? "PixArtAlphaPipeline" : "PixArtSigmaPipeline"},
                    {"_diffusers_version", "0.42.1"},
                    {"scheduler", {"diffusers", "DPMSolverMultistepScheduler"}},
                    {"text_encoder", {"transformers", "T5EncoderModel"}},
                    {"tokenizer", {"transformers", "T5Tokenizer"}},
                    {"transformer", {"diffusers", "PixArtTransformer2DModel"}},
                    {"vae", {"diffusers", "AutoencoderKL"}}});
}

}  // namespace

absl::Status MakePixArtModel(const MakePixArtOptions& o) {
  if (o.family != "pixart-sigma" && o.family != "pixart-alpha") {
    return absl::InvalidArgumentError(absl::StrCat("pixart family must be pixart-sigma or pixart-alpha, got '", o.family, "'"));
  }
  auto preset = GetPreset(o.family, o.preset);
  if (!preset.ok()) return preset.status();
  if (o.dtype != "f32" && o.dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be f32 or bf16, got '", o.dtype, "'"));
  }
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  const bool alpha = o.family == "pixart-alpha";
  const at::ScalarType dtype = o.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const std::string& d = o.out_dir;
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  Preset p = *preset;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto vocab = WriteT5Tokenizer(d + "/tokenizer", p.spm_vocab, alpha ? 120 : 300);
  if (!vocab.ok()) return vocab.status();
  p.t5.vocab_size = *vocab;
  if (absl::Status s = WriteT5Encoder(d + "/text_encoder", p.t5, /*local_attention=*/false, gen, dtype); !s.ok()) {
    return s;
  }
  p.transformer.caption_channels = p.t5.d_model;
  auto transformer = worker::pixart::PixArtTransformer::Create(p.transformer, at::kFloat);
  if (!transformer.ok()) return transformer.status();
  NamedTensors params = ModuleParameters((*transformer)->module());
  InitialiseRandom(params, gen, 0.02);
  if (absl::Status s = WriteTransformer(d, p.transformer, params, dtype); !s.ok()) return s;

  if (absl::Status s = WriteRandomVae(d, p.vae, gen, dtype); !s.ok()) return s;
  if (absl::Status s = WriteScheduler(d); !s.ok()) return s;
  return WriteModelIndex(d, alpha);
}

}  // namespace ditserve::tools::make_model
