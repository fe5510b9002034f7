#include "worker/make_model/flux_directory_writer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "worker/make_model/caption_corpus.h"
#include "worker/tokenizers/clip_tokenizer.h"
#include "worker/tokenizers/t5_tokenizer.h"
#include "worker/weights/safetensors_writer.h"

namespace ditserve::worker::make_model {
namespace {

using json = nlohmann::ordered_json;

absl::Status CreateDir(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status WriteJson(const std::string& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  return out ? absl::OkStatus() : absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
}

NamedTensors Cast(NamedTensors params, at::ScalarType t) {
  for (auto& [name, tensor] : params) tensor = tensor.detach().to(t).contiguous();
  return params;
}

std::string TorchDtype(at::ScalarType t) { return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32"; }

// Head h of H attends around offset o_h = 2h - (H - 1) (-3, -1, 1, 3 for
// four heads): bias(d) = -0.5·|d - o_h| for the relative positions d of
// each bucket (the largest over the bucket), at least -30.
void SetLocalT5Attention(NamedTensors& params, const text::T5Config& c) {
  for (auto& [name, t] : params) {
    if (!absl::EndsWith(name, "relative_attention_bias.weight")) continue;
    at::NoGradGuard no_grad;
    const int64_t span = 2 * c.relative_attention_max_distance + 1;
    const at::Tensor d = at::arange(-c.relative_attention_max_distance, c.relative_attention_max_distance + 1, at::kLong);
    const at::Tensor buckets =
        text::T5RelativePositionBucket(d, c.relative_attention_num_buckets, c.relative_attention_max_distance);
    at::Tensor bias = at::full(t.sizes(), -30.0, at::kFloat);  // [buckets, heads]
    const auto b = buckets.accessor<int64_t, 1>();
    for (int64_t h = 0; h < t.size(1); ++h) {
      for (int64_t i = 0; i < span; ++i) {
        const double offset = 2.0 * h - (t.size(1) - 1);
        const double value =
            std::max(-30.0, -0.5 * std::abs(static_cast<double>(i - c.relative_attention_max_distance) - offset));
        bias[b[i]][h] = std::max(bias[b[i]][h].item<double>(), value);
      }
    }
    t.copy_(bias);
  }
}

}  // namespace

NamedTensors ModuleParameters(torch::nn::Module& module, const std::string& prefix) {
  NamedTensors out;
  for (const auto& p : module.named_parameters()) out.push_back({prefix + p.key(), p.value()});
  return out;
}

void InitialiseRandom(NamedTensors& params, at::Generator& generator, double std) {
  at::NoGradGuard no_grad;
  for (auto& [name, t] : params) {
    if (absl::EndsWith(name, ".bias")) {
      t.zero_();
    } else if (absl::StrContains(name, "norm") && absl::EndsWith(name, ".weight") && t.dim() == 1) {
      t.fill_(1.0);
    } else {
      t.copy_(at::randn(t.sizes(), generator, at::TensorOptions().dtype(at::kFloat)) * std);
    }
  }
}

absl::Status WriteTextComponents(const std::string& d, TextComponentsSpec& spec, at::Generator& generator,
                                 at::ScalarType dtype) {
  for (const char* sub : {"tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2"}) {
    if (absl::Status s = CreateDir(d + "/" + sub); !s.ok()) return s;
  }
  const std::string torch_dtype = TorchDtype(dtype);
  // Tokenizers, from the carried captions.
  const std::vector<std::string> corpus = CaptionCorpus();
  const std::vector<std::string> base = tokenizers::ByteLevelSymbols();
  json vocab = json::object();
  for (const auto& s : base) vocab[s] = vocab.size();
  for (const auto& s : base) vocab[s + "</w>"] = vocab.size();
  std::string merges_text = "#version: 0.2\n";
  for (const auto& [a, b] : LearnBpeMerges(corpus, spec.bpe_merges)) {
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
          "--input=", corpus_path, " --model_prefix=", d, "/tokenizer_2/spiece --vocab_size=", spec.spm_vocab,
          " --model_type=unigram --character_coverage=1.0 --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1",
          " --num_threads=1 --hard_vocab_limit=false --minloglevel=2"));
      !s.ok()) {
    return s;
  }
  std::error_code ec;
  std::filesystem::remove(corpus_path, ec);
  std::filesystem::remove(d + "/tokenizer_2/spiece.vocab", ec);
  const json t5_special = {{"eos_token", "</s>"}, {"pad_token", "<pad>"}, {"unk_token", "<unk>"}};
  json t5_tok = {{"tokenizer_class", "T5Tokenizer"}, {"model_max_length", spec.t5_model_max_length}, {"extra_ids", 0}, {"legacy", true}};
  t5_tok.update(t5_special);
  if (absl::Status s = WriteJson(d + "/tokenizer_2/tokenizer_config.json", t5_tok); !s.ok()) return s;
  if (absl::Status s = WriteJson(d + "/tokenizer_2/special_tokens_map.json", t5_special); !s.ok()) return s;

  spec.clip.vocab_size = static_cast<int>(vocab.size());
  spec.clip.eos_token_id = static_cast<int>(bos + 1);
  // The trainer may stop short of the asked size on a small corpus.
  auto spm = tokenizers::T5Tokenizer::Load(d + "/tokenizer_2/spiece.model");
  if (!spm.ok()) return spm.status();
  spec.t5.vocab_size = (*spm)->vocab_size();

  auto clip = text::ClipTextModel::Create(spec.clip, at::kFloat);
  if (!clip.ok()) return clip.status();
  NamedTensors clip_params = ModuleParameters((*clip)->module());
  InitialiseRandom(clip_params, generator, 0.02);
  if (absl::Status s = weights::WriteSafetensors(d + "/text_encoder/model.safetensors", Cast(clip_params, dtype)); !s.ok()) return s;
  const auto& cc = spec.clip;
  if (absl::Status s = WriteJson(d + "/text_encoder/config.json",
                                 {{"architectures", {"CLIPTextModel"}}, {"model_type", "clip_text_model"},
                                  {"vocab_size", cc.vocab_size}, {"hidden_size", cc.hidden_size},
                                  {"intermediate_size", cc.intermediate_size},
                                  {"num_hidden_layers", cc.num_hidden_layers},
                                  {"num_attention_heads", cc.num_attention_heads},
                                  {"max_position_embeddings", 77}, {"hidden_act", "quick_gelu"},
                                  {"layer_norm_eps", 1e-5}, {"projection_dim", cc.hidden_size},
                                  {"bos_token_id", bos}, {"eos_token_id", bos + 1}, {"pad_token_id", bos + 1},
                                  {"torch_dtype", torch_dtype}});
      !s.ok()) {
    return s;
  }
  auto t5 = text::T5Encoder::Create(spec.t5, at::kFloat);
  if (!t5.ok()) return t5.status();
  NamedTensors t5_params = ModuleParameters((*t5)->module());
  InitialiseRandom(t5_params, generator, 0.05);
  if (spec.local_t5_attention) SetLocalT5Attention(t5_params, spec.t5);
  for (const auto& [name, t] : NamedTensors(t5_params)) {
    if (name == "shared.weight") t5_params.push_back({"encoder.embed_tokens.weight", t});
  }
  if (absl::Status s = weights::WriteSafetensors(d + "/text_encoder_2/model.safetensors", Cast(t5_params, dtype)); !s.ok()) return s;
  const auto& tc = spec.t5;
  return WriteJson(d + "/text_encoder_2/config.json",
                   {{"architectures", {"T5EncoderModel"}}, {"model_type", "t5"},
                    {"vocab_size", tc.vocab_size}, {"d_model", tc.d_model}, {"d_kv", tc.d_kv},
                    {"d_ff", tc.d_ff}, {"num_layers", tc.num_layers}, {"num_heads", tc.num_heads},
                    {"relative_attention_num_buckets", tc.relative_attention_num_buckets},
                    {"relative_attention_max_distance", tc.relative_attention_max_distance},
                    {"feed_forward_proj", "gated-gelu"}, {"dense_act_fn", "gelu_new"},
                    {"is_gated_act", true}, {"layer_norm_epsilon", tc.layer_norm_epsilon}, {"tie_word_embeddings", false},
                    {"pad_token_id", 0}, {"eos_token_id", 1}, {"decoder_start_token_id", 0},
                    {"is_encoder_decoder", true}, {"torch_dtype", torch_dtype}});
}

absl::Status WriteTransformer(const std::string& dir, const flux::FluxTransformerConfig& t, const NamedTensors& params,
                              at::ScalarType dtype, int shards) {
  const std::string d = dir + "/transformer";
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  if (absl::Status s = weights::WriteSafetensorsCheckpoint(d, "diffusion_pytorch_model", Cast(params, dtype), shards);
      !s.ok()) {
    return s;
  }
  return WriteJson(d + "/config.json",
                   {{"_class_name", "FluxTransformer2DModel"}, {"_diffusers_version", "0.42.1"},
                    {"attention_head_dim", t.attention_head_dim}, {"axes_dims_rope", t.axes_dims_rope},
                    {"guidance_embeds", t.guidance_embeds}, {"in_channels", t.in_channels},
                    {"joint_attention_dim", t.joint_attention_dim},
                    {"num_attention_heads", t.num_attention_heads}, {"num_layers", t.num_layers},
                    {"num_single_layers", t.num_single_layers},
                    {"out_channels", t.out_channels == t.in_channels ? json(nullptr) : json(t.out_channels)},
                    {"patch_size", 1}, {"pooled_projection_dim", t.pooled_projection_dim},
                    {"torch_dtype", TorchDtype(dtype)}});
}

absl::Status WriteVae(const std::string& dir, const vae::VaeConfig& c, const NamedTensors& params, at::ScalarType dtype) {
  const std::string d = dir + "/vae";
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  if (absl::Status s = weights::WriteSafetensors(d + "/diffusion_pytorch_model.safetensors", Cast(params, dtype)); !s.ok()) {
    return s;
  }
  const size_t levels = c.block_out_channels.size();
  json config = {{"_class_name", "AutoencoderKL"}, {"_diffusers_version", "0.42.1"},
                 {"act_fn", "silu"}, {"block_out_channels", c.block_out_channels},
                 {"down_block_types", std::vector<std::string>(levels, "DownEncoderBlock2D")},
                 {"up_block_types", std::vector<std::string>(levels, "UpDecoderBlock2D")},
                 {"force_upcast", true}, {"in_channels", c.in_channels}, {"out_channels", c.out_channels},
                 {"latent_channels", c.latent_channels}, {"layers_per_block", c.layers_per_block},
                 {"mid_block_add_attention", c.mid_block_add_attention}, {"norm_num_groups", c.norm_num_groups},
                 {"sample_size", c.sample_size}, {"scaling_factor", c.scaling_factor}};
  config["shift_factor"] = c.shift_factor;
  config["use_post_quant_conv"] = c.use_post_quant_conv;
  config["use_quant_conv"] = c.use_quant_conv;
  return WriteJson(d + "/config.json", config);
}

absl::Status WriteScheduler(const std::string& dir, const flux::FlowMatchSchedulerConfig& c) {
  if (absl::Status s = CreateDir(dir + "/scheduler"); !s.ok()) return s;
  return WriteJson(dir + "/scheduler/scheduler_config.json",
                   {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"_diffusers_version", "0.42.1"},
                    {"base_image_seq_len", c.base_image_seq_len}, {"base_shift", c.base_shift},
                    {"max_image_seq_len", c.max_image_seq_len}, {"max_shift", c.max_shift},
                    {"num_train_timesteps", c.num_train_timesteps}, {"shift", c.shift},
                    {"use_dynamic_shifting", c.use_dynamic_shifting}});
}

absl::Status WriteModelIndex(const std::string& dir) {
  if (absl::Status s = CreateDir(dir); !s.ok()) return s;
  return WriteJson(dir + "/model_index.json",
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
