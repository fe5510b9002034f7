#include "worker/make_model/make_flux_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/make_model/caption_corpus.h"
#include "worker/models/flux/flux_transformer.h"
#include "worker/models/text/clip_text_model.h"
#include "worker/models/text/t5_encoder.h"
#include "worker/models/vae/autoencoder_kl.h"
#include "worker/tokenizers/clip_tokenizer.h"
#include "worker/tokenizers/t5_tokenizer.h"
#include "worker/weights/safetensors_writer.h"

namespace ditserve::worker::make_model {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;
using json = nlohmann::ordered_json;

struct Preset {
  flux::FluxTransformerConfig transformer;
  text::ClipTextConfig clip;
  text::T5Config t5;
  vae::VaeConfig vae;
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

// Seeded initialisation: biases 0, norm weights 1, others N(0, std).
void Initialise(Named& params, at::Generator& gen, double std) {
  at::NoGradGuard no_grad;
  for (auto& [name, t] : params) {
    if (absl::EndsWith(name, ".bias")) {
      t.zero_();
    } else if (absl::StrContains(name, "norm") && absl::EndsWith(name, ".weight") && t.dim() == 1) {
      t.fill_(1.0);
    } else {
      t.copy_(at::randn(t.sizes(), gen, at::TensorOptions().dtype(at::kFloat)) * std);
    }
  }
}

Named FromModule(torch::nn::Module& m, const std::string& prefix) {
  Named out;
  for (const auto& p : m.named_parameters()) out.push_back({prefix + p.key(), p.value()});
  return out;
}

// The VAE encoder's keys and shapes (diffusers' Encoder with
// DownEncoderBlock2D blocks, double_z), so the checkpoint is a whole
// AutoencoderKL. ditserve never runs the encoder.
Named VaeEncoderParameters(const vae::VaeConfig& c) {
  Named out;
  const auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    out.push_back({"encoder." + name, at::empty(shape, at::kFloat)});
  };
  const auto conv = [&](const std::string& name, int64_t o, int64_t i, int64_t k) {
    add(name + ".weight", {o, i, k, k});
    add(name + ".bias", {o});
  };
  const auto norm = [&](const std::string& name, int64_t ch) {
    add(name + ".weight", {ch});
    add(name + ".bias", {ch});
  };
  const auto resnet = [&](const std::string& name, int64_t in, int64_t o) {
    norm(name + ".norm1", in);
    conv(name + ".conv1", o, in, 3);
    norm(name + ".norm2", o);
    conv(name + ".conv2", o, o, 3);
    if (in != o) conv(name + ".conv_shortcut", o, in, 1);
  };
  const auto& ch = c.block_out_channels;
  conv("conv_in", ch[0], 3, 3);
  int64_t in = ch[0];
  for (size_t i = 0; i < ch.size(); ++i) {
    for (int j = 0; j < c.layers_per_block; ++j) {
      resnet(absl::StrCat("down_blocks.", i, ".resnets.", j), j == 0 ? in : ch[i], ch[i]);
    }
    if (i + 1 < ch.size()) conv(absl::StrCat("down_blocks.", i, ".downsamplers.0.conv"), ch[i], ch[i], 3);
    in = ch[i];
  }
  const int64_t top = ch.back();
  resnet("mid_block.resnets.0", top, top);
  resnet("mid_block.resnets.1", top, top);
  norm("mid_block.attentions.0.group_norm", top);
  for (const char* l : {"to_q", "to_k", "to_v", "to_out.0"}) {
    add(absl::StrCat("mid_block.attentions.0.", l, ".weight"), {top, top});
    add(absl::StrCat("mid_block.attentions.0.", l, ".bias"), {top});
  }
  norm("conv_norm_out", top);
  conv("conv_out", 2 * c.latent_channels, top, 3);
  return out;
}

absl::Status WriteJson(const std::string& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  return out ? absl::OkStatus() : absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
}

Named Cast(Named params, at::ScalarType t) {
  for (auto& [name, tensor] : params) tensor = tensor.to(t);
  return params;
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
  const std::string torch_dtype = o.dtype == "bf16" ? "bfloat16" : "float32";
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const char* sub : {"scheduler", "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "transformer", "vae"}) {
    fs::create_directories(fs::path(o.out_dir) / sub, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", o.out_dir, "/", sub, ": ", ec.message()));
  }
  const std::string& d = o.out_dir;
  Preset p = *preset;

  // Tokenizers, from the carried captions.
  const std::vector<std::string> corpus = CaptionCorpus();
  const std::vector<std::string> base = tokenizers::ByteLevelSymbols();
  json vocab = json::object();
  for (const auto& s : base) vocab[s] = vocab.size();
  for (const auto& s : base) vocab[s + "</w>"] = vocab.size();
  std::string merges_text = "#version: 0.2\n";
  for (const auto& [a, b] : LearnBpeMerges(corpus, p.bpe_merges)) {
    if (!vocab.contains(a + b)) vocab[a + b] = vocab.size();
    merges_text += a + " " + b + "\n";
  }
  const int64_t bos = static_cast<int64_t>(vocab.size());
  vocab["<|startoftext|>"] = bos;
  vocab["<|endoftext|>"] = bos + 1;
  if (absl::Status s = WriteJson(d + "/tokenizer/vocab.json", vocab); !s.ok()) return s;
  std::ofstream(d + "/tokenizer/merges.txt") << merges_text;
  const json clip_special = {{"bos_token", "<|startoftext|>"}, {"eos_token", "<|endoftext|>"},
                             {"pad_token", "<|endoftext|>"}, {"unk_token", "<|endoftext|>"}};
  json clip_tok = {{"tokenizer_class", "CLIPTokenizer"}, {"model_max_length", 77}, {"do_lower_case", true},
                   {"add_prefix_space", false}, {"errors", "replace"}};
  clip_tok.update(clip_special);
  if (absl::Status s = WriteJson(d + "/tokenizer/tokenizer_config.json", clip_tok); !s.ok()) return s;
  if (absl::Status s = WriteJson(d + "/tokenizer/special_tokens_map.json", clip_special); !s.ok()) return s;

  const std::string corpus_path = d + "/tokenizer_2/corpus.txt";
  {
    std::ofstream c(corpus_path);
    for (const auto& line : corpus) c << line << "\n";
  }
  if (absl::Status s = tokenizers::TrainSentencePiece(absl::StrCat(
          "--input=", corpus_path, " --model_prefix=", d, "/tokenizer_2/spiece --vocab_size=", p.spm_vocab,
          " --model_type=unigram --character_coverage=1.0 --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1",
          " --num_threads=1 --hard_vocab_limit=false --minloglevel=2"));
      !s.ok()) {
    return s;
  }
  fs::remove(corpus_path, ec);
  fs::remove(d + "/tokenizer_2/spiece.vocab", ec);
  const json t5_special = {{"eos_token", "</s>"}, {"pad_token", "<pad>"}, {"unk_token", "<unk>"}};
  json t5_tok = {{"tokenizer_class", "T5Tokenizer"}, {"model_max_length", 512}, {"extra_ids", 0}, {"legacy", true}};
  t5_tok.update(t5_special);
  if (absl::Status s = WriteJson(d + "/tokenizer_2/tokenizer_config.json", t5_tok); !s.ok()) return s;
  if (absl::Status s = WriteJson(d + "/tokenizer_2/special_tokens_map.json", t5_special); !s.ok()) return s;

  p.clip.vocab_size = static_cast<int>(vocab.size());
  p.clip.eos_token_id = static_cast<int>(bos + 1);
  // The trainer may stop short of the asked size on a small corpus.
  auto spm = tokenizers::T5Tokenizer::Load(d + "/tokenizer_2/spiece.model");
  if (!spm.ok()) return spm.status();
  p.t5.vocab_size = (*spm)->vocab_size();

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  // Text encoders.
  auto clip = text::ClipTextModel::Create(p.clip, at::kFloat);
  if (!clip.ok()) return clip.status();
  Named clip_params = FromModule((*clip)->module(), "");
  Initialise(clip_params, gen, 0.02);
  if (absl::Status s = weights::WriteSafetensors(d + "/text_encoder/model.safetensors", Cast(clip_params, dtype)); !s.ok()) return s;
  if (absl::Status s = WriteJson(d + "/text_encoder/config.json",
                                 {{"architectures", {"CLIPTextModel"}}, {"model_type", "clip_text_model"},
                                  {"vocab_size", p.clip.vocab_size}, {"hidden_size", p.clip.hidden_size},
                                  {"intermediate_size", p.clip.intermediate_size},
                                  {"num_hidden_layers", p.clip.num_hidden_layers},
                                  {"num_attention_heads", p.clip.num_attention_heads},
                                  {"max_position_embeddings", 77}, {"hidden_act", "quick_gelu"},
                                  {"layer_norm_eps", 1e-5}, {"projection_dim", p.clip.hidden_size},
                                  {"bos_token_id", bos}, {"eos_token_id", bos + 1}, {"pad_token_id", bos + 1},
                                  {"torch_dtype", torch_dtype}});
      !s.ok()) {
    return s;
  }
  auto t5 = text::T5Encoder::Create(p.t5, at::kFloat);
  if (!t5.ok()) return t5.status();
  Named t5_params = FromModule((*t5)->module(), "");
  Initialise(t5_params, gen, 0.05);
  for (const auto& [name, t] : Named(t5_params)) {
    if (name == "shared.weight") t5_params.push_back({"encoder.embed_tokens.weight", t});
  }
  if (absl::Status s = weights::WriteSafetensors(d + "/text_encoder_2/model.safetensors", Cast(t5_params, dtype)); !s.ok()) return s;
  if (absl::Status s = WriteJson(d + "/text_encoder_2/config.json",
                                 {{"architectures", {"T5EncoderModel"}}, {"model_type", "t5"},
                                  {"vocab_size", p.t5.vocab_size}, {"d_model", p.t5.d_model}, {"d_kv", p.t5.d_kv},
                                  {"d_ff", p.t5.d_ff}, {"num_layers", p.t5.num_layers}, {"num_heads", p.t5.num_heads},
                                  {"relative_attention_num_buckets", 32}, {"relative_attention_max_distance", 128},
                                  {"feed_forward_proj", "gated-gelu"}, {"dense_act_fn", "gelu_new"},
                                  {"is_gated_act", true}, {"layer_norm_epsilon", 1e-6}, {"tie_word_embeddings", false},
                                  {"pad_token_id", 0}, {"eos_token_id", 1}, {"decoder_start_token_id", 0},
                                  {"is_encoder_decoder", true}, {"torch_dtype", torch_dtype}});
      !s.ok()) {
    return s;
  }
  // Transformer.
  p.transformer.joint_attention_dim = p.t5.d_model;
  p.transformer.pooled_projection_dim = p.clip.hidden_size;
  p.transformer.in_channels = p.transformer.out_channels = 4 * p.vae.latent_channels;
  auto transformer = flux::FluxTransformer::Create(p.transformer, at::kFloat);
  if (!transformer.ok()) return transformer.status();
  Named flux_params = FromModule((*transformer)->module(), "");
  Initialise(flux_params, gen, 0.02);
  if (absl::Status s = weights::WriteSafetensorsCheckpoint(d + "/transformer", "diffusion_pytorch_model",
                                                           Cast(flux_params, dtype), o.shards);
      !s.ok()) {
    return s;
  }
  const auto& t = p.transformer;
  if (absl::Status s = WriteJson(d + "/transformer/config.json",
                                 {{"_class_name", "FluxTransformer2DModel"}, {"_diffusers_version", "0.42.1"},
                                  {"attention_head_dim", t.attention_head_dim}, {"axes_dims_rope", t.axes_dims_rope},
                                  {"guidance_embeds", t.guidance_embeds}, {"in_channels", t.in_channels},
                                  {"joint_attention_dim", t.joint_attention_dim},
                                  {"num_attention_heads", t.num_attention_heads}, {"num_layers", t.num_layers},
                                  {"num_single_layers", t.num_single_layers}, {"out_channels", nullptr},
                                  {"patch_size", 1}, {"pooled_projection_dim", t.pooled_projection_dim}});
      !s.ok()) {
    return s;
  }
  // VAE: decoder from our module, encoder from its key list.
  auto vae = vae::VaeDecoder::Create(p.vae, at::kFloat);
  if (!vae.ok()) return vae.status();
  Named vae_params = VaeEncoderParameters(p.vae);
  for (auto& kv : (*vae)->NamedParameters()) vae_params.push_back(kv);
  Initialise(vae_params, gen, 0.05);
  if (absl::Status s = weights::WriteSafetensors(d + "/vae/diffusion_pytorch_model.safetensors", Cast(vae_params, dtype)); !s.ok()) return s;
  const size_t levels = p.vae.block_out_channels.size();
  if (absl::Status s = WriteJson(d + "/vae/config.json",
                                 {{"_class_name", "AutoencoderKL"}, {"_diffusers_version", "0.42.1"},
                                  {"act_fn", "silu"}, {"block_out_channels", p.vae.block_out_channels},
                                  {"down_block_types", std::vector<std::string>(levels, "DownEncoderBlock2D")},
                                  {"up_block_types", std::vector<std::string>(levels, "UpDecoderBlock2D")},
                                  {"force_upcast", true}, {"in_channels", 3}, {"out_channels", 3},
                                  {"latent_channels", p.vae.latent_channels}, {"layers_per_block", p.vae.layers_per_block},
                                  {"mid_block_add_attention", true}, {"norm_num_groups", p.vae.norm_num_groups},
                                  {"sample_size", p.vae.sample_size}, {"scaling_factor", 0.3611}, {"shift_factor", 0.1159},
                                  {"use_post_quant_conv", false}, {"use_quant_conv", false}});
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteJson(d + "/scheduler/scheduler_config.json",
                                 {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"_diffusers_version", "0.42.1"},
                                  {"base_image_seq_len", 256}, {"base_shift", 0.5}, {"max_image_seq_len", 4096},
                                  {"max_shift", 1.15}, {"num_train_timesteps", 1000}, {"shift", 3.0},
                                  {"use_dynamic_shifting", true}});
      !s.ok()) {
    return s;
  }
  return WriteJson(d + "/model_index.json",
                   {{"_class_name", "FluxPipeline"}, {"_diffusers_version", "0.42.1"},
                    {"scheduler", {"diffusers", "FlowMatchEulerDiscreteScheduler"}},
                    {"text_encoder", {"transformers", "CLIPTextModel"}},
                    {"text_encoder_2", {"transformers", "T5EncoderModel"}},
                    {"tokenizer", {"transformers", "CLIPTokenizer"}},
                    {"tokenizer_2", {"transformers", "T5TokenizerFast"}},
                    {"transformer", {"diffusers", "FluxTransformer2DModel"}},
                    {"vae", {"diffusers", "AutoencoderKL"}}});
}

}  // namespace ditserve::worker::make_model
