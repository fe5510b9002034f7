#include "tools/make_model/make_hunyuandit_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "tools/make_model/bert_writer.h"
#include "tools/make_model/directory_writer.h"
#include "worker/models/hunyuandit/hunyuandit_transformer.h"
#include "worker/weights/safetensors_writer.h"

namespace ditserve::tools::make_model {
namespace {

using json = nlohmann::ordered_json;

struct Preset {
  worker::hunyuandit::HunyuanDiTConfig transformer;
  worker::text::BertConfig bert;
  int bert_vocab = 600;
  worker::text::T5Config t5;
  int spm_vocab = 64;
  worker::vae::VaeConfig vae;
};

absl::StatusOr<Preset> GetPreset(const std::string& name) {
  Preset p;
  worker::hunyuandit::HunyuanDiTConfig& t = p.transformer;
  worker::text::BertConfig& b = p.bert;
  b.type_vocab_size = 2;
  b.max_position_embeddings = 512;
  b.layer_norm_eps = 1e-12;
  b.hidden_act = "gelu";
  b.pad_token_id = 0;
  if (name == "tiny") {
    t.num_layers = 6;
    t.num_attention_heads = 4;  // room for Ulysses 4
    t.attention_head_dim = 24;
    t.sample_size = 8;  // 64 px
    b.hidden_size = 32;
    b.num_hidden_layers = 2;
    b.num_attention_heads = 4;
    b.intermediate_size = 64;
    p.t5 = {0, 64, 16, 128, 2, 4, 32, 128, 1e-6, "gelu_new"};
    t.pooled_projection_dim = 32;
    p.vae.block_out_channels = {8, 8, 16, 16};
    p.vae.norm_num_groups = 4;
    p.vae.sample_size = 64;
  } else if (name == "small") {
    t.num_layers = 6;
    t.num_attention_heads = 8;
    t.attention_head_dim = 88;
    t.sample_size = 64;  // 512 px: 1024 image tokens
    b.hidden_size = 256;
    b.num_hidden_layers = 2;
    b.num_attention_heads = 4;
    b.intermediate_size = 1024;
    p.bert_vocab = 2000;
    p.t5 = {0, 512, 64, 1024, 2, 8, 32, 128, 1e-6, "gelu_new"};
    p.spm_vocab = 400;
    t.pooled_projection_dim = 256;
    p.vae.block_out_channels = {32, 64, 64, 64};
    p.vae.norm_num_groups = 16;
    p.vae.sample_size = 512;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--preset must be tiny or small for hunyuandit, got '", name, "'"));
  }
  t.hidden_size = t.inner_dim();
  t.in_channels = 4;
  t.patch_size = 2;
  t.mlp_ratio = 4.3637;  // HunyuanDiT-v1.2's
  t.learn_sigma = true;
  t.cross_attention_dim = b.hidden_size;
  t.cross_attention_dim_t5 = p.t5.d_model;
  t.text_len = 77;      // HunyuanDiTPipeline's CLIP length
  t.text_len_t5 = 256;  // and its mT5 length
  t.use_style_cond_and_image_meta_size = false;
  p.vae.latent_channels = 4;
  p.vae.layers_per_block = 1;
  p.vae.scaling_factor = 0.13025;
  p.vae.shift_factor = 0.0;
  p.vae.use_quant_conv = true;
  p.vae.use_post_quant_conv = true;
  return p;
}

absl::Status WriteTransformer(const std::string& dir, const worker::hunyuandit::HunyuanDiTConfig& t,
                              const NamedTensors& params, at::ScalarType dtype) {
  const std::string d = dir + "/transformer";
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  if (absl::Status s = worker::weights::WriteSafetensorsCheckpoint(d, "diffusion_pytorch_model", Cast(params, dtype), 1);
      !s.ok()) {
    return s;
  }
  return WriteJson(d + "/config.json",
                   {{"_class_name", "HunyuanDiT2DModel"}, {"_diffusers_version", "0.42.1"},
                    {"activation_fn", "gelu-approximate"}, {"attention_head_dim", t.attention_head_dim},
                    {"cross_attention_dim", t.cross_attention_dim},
                    {"cross_attention_dim_t5", t.cross_attention_dim_t5}, {"hidden_size", t.hidden_size},
                    {"in_channels", t.in_channels}, {"learn_sigma", t.learn_sigma}, {"mlp_ratio", t.mlp_ratio},
                    {"norm_type", "layer_norm"}, {"num_attention_heads", t.num_attention_heads},
                    {"num_layers", t.num_layers}, {"patch_size", t.patch_size},
                    {"pooled_projection_dim", t.pooled_projection_dim}, {"sample_size", t.sample_size},
                    {"text_len", t.text_len}, {"text_len_t5", t.text_len_t5},
                    {"use_style_cond_and_image_meta_size", t.use_style_cond_and_image_meta_size}});
}

// The HunyuanDiT checkpoints' scheduler_config.json.
absl::Status WriteScheduler(const std::string& dir) {
  if (absl::Status s = CreateDir(dir + "/scheduler"); !s.ok()) return s;
  return WriteJson(dir + "/scheduler/scheduler_config.json",
                   {{"_class_name", "DDPMScheduler"}, {"_diffusers_version", "0.42.1"}, {"beta_end", 0.03},
                    {"beta_schedule", "scaled_linear"}, {"beta_start", 0.00085}, {"clip_sample", false},
                    {"clip_sample_range", 1.0}, {"dynamic_thresholding_ratio", 0.995},
                    {"num_train_timesteps", 1000}, {"prediction_type", "v_prediction"},
                    {"rescale_betas_zero_snr", false}, {"sample_max_value", 1.0}, {"steps_offset", 1},
                    {"thresholding", false}, {"timestep_spacing", "leading"}, {"trained_betas", nullptr},
                    {"variance_type", "fixed_small"}});
}

absl::Status WriteModelIndex(const std::string& dir) {
  return WriteJson(dir + "/model_index.json",
                   {{"_class_name", "HunyuanDiTPipeline"},
                    {"_diffusers_version", "0.42.1"},
                    {"feature_extractor", {nullptr, nullptr}},
                    {"requires_safety_checker", false},
                    {"safety_checker", {nullptr, nullptr}},
                    {"scheduler", {"diffusers", "DDPMScheduler"}},
                    {"text_encoder", {"transformers", "BertModel"}},
                    {"text_encoder_2", {"transformers", "T5EncoderModel"}},
                    {"tokenizer", {"transformers", "BertTokenizer"}},
                    {"tokenizer_2", {"transformers", "T5Tokenizer"}},
                    {"transformer", {"diffusers", "HunyuanDiT2DModel"}},
                    {"vae", {"diffusers", "AutoencoderKL"}}});
}

}  // namespace

absl::Status MakeHunyuanDiTModel(const MakeHunyuanDiTOptions& o) {
  auto preset = GetPreset(o.preset);
  if (!preset.ok()) return preset.status();
  if (o.dtype != "f32" && o.dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be f32 or bf16, got '", o.dtype, "'"));
  }
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  const at::ScalarType dtype = o.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const std::string& d = o.out_dir;
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  Preset p = *preset;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  auto bert_vocab = WriteBertTokenizer(d + "/tokenizer", p.bert_vocab, 77);
  if (!bert_vocab.ok()) return bert_vocab.status();
  p.bert.vocab_size = *bert_vocab;
  if (absl::Status s = WriteBertTextEncoder(d + "/text_encoder", p.bert, gen, dtype); !s.ok()) return s;
  auto vocab = WriteT5Tokenizer(d + "/tokenizer_2", p.spm_vocab, 256);
  if (!vocab.ok()) return vocab.status();
  p.t5.vocab_size = *vocab;
  if (absl::Status s = WriteT5Encoder(d + "/text_encoder_2", p.t5, /*local_attention=*/false, gen, dtype); !s.ok()) {
    return s;
  }
  auto transformer = worker::hunyuandit::HunyuanDiTTransformer::Create(p.transformer, at::kFloat);
  if (!transformer.ok()) return transformer.status();
  NamedTensors params = ModuleParameters((*transformer)->module());
  InitialiseRandom(params, gen, 0.02);
  if (absl::Status s = WriteTransformer(d, p.transformer, params, dtype); !s.ok()) return s;
  if (absl::Status s = WriteRandomVae(d, p.vae, gen, dtype); !s.ok()) return s;
  if (absl::Status s = WriteScheduler(d); !s.ok()) return s;
  return WriteModelIndex(d);
}

}  // namespace ditserve::tools::make_model
