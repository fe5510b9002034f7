#include "tools/make_model/directory_writer.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tools/make_model/caption_corpus.h"
#include "worker/tokenizers/clip_tokenizer.h"
#include "worker/tokenizers/t5_tokenizer.h"
#include "worker/weights/safetensors_writer.h"
#include "worker/models/vae/vae_encoder.h"

namespace ditserve::tools::make_model {
namespace {

using json = nlohmann::ordered_json;

// Head h of H attends around offset o_h = 2h - (H - 1) (-3, -1, 1, 3 for
// four heads): bias(d) = -0.5·|d - o_h| for the relative positions d of
// each bucket (the largest over the bucket), at least -30.
void SetLocalT5Attention(NamedTensors& params, const worker::text::T5Config& c) {
  for (auto& [name, t] : params) {
    if (!absl::EndsWith(name, "relative_attention_bias.weight")) continue;
    at::NoGradGuard no_grad;
    const int64_t span = 2 * c.relative_attention_max_distance + 1;
    const at::Tensor d = at::arange(-c.relative_attention_max_distance, c.relative_attention_max_distance + 1, at::kLong);
    const at::Tensor buckets =
        worker::text::T5RelativePositionBucket(d, c.relative_attention_num_buckets, c.relative_attention_max_distance);
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

// The bytes in the order of GPT-2's bytes_to_unicode: '!'..'~', 0xA1..0xAC,
// 0xAE..0xFF, then the rest ascending.
std::vector<int> Gpt2ByteOrder() {
  std::vector<int> order;
  std::vector<bool> seen(256, false);
  for (auto [lo, hi] : {std::pair{int{'!'}, int{'~'}}, {0xA1, 0xAC}, {0xAE, 0xFF}}) {
    for (int b = lo; b <= hi; ++b) {
      order.push_back(b);
      seen[b] = true;
    }
  }
  for (int b = 0; b < 256; ++b) {
    if (!seen[b]) order.push_back(b);
  }
  return order;
}

}  // namespace

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

NamedTensors ModuleParameters(torch::nn::Module& module, const std::string& prefix) {
  NamedTensors out;
  for (const auto& p : module.named_parameters()) out.push_back({prefix + p.key(), p.value()});
  return out;
}

NamedTensors ModuleBuffers(torch::nn::Module& module, const std::string& prefix) {
  NamedTensors out;
  for (const auto& b : module.named_buffers()) out.push_back({prefix + b.key(), b.value()});
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

absl::StatusOr<ClipVocabulary> WriteClipTokenizer(const std::string& d, const ClipTokenizerSpec& spec) {
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  const std::vector<std::string> symbols = worker::tokenizers::ByteLevelSymbols();
  std::vector<std::string> base;
  if (spec.gpt2_symbol_order) {
    for (int b : Gpt2ByteOrder()) base.push_back(symbols[b]);
  } else {
    base = symbols;
  }
  json vocab = json::object();
  for (const auto& s : base) vocab[s] = vocab.size();
  for (const auto& s : base) vocab[s + "</w>"] = vocab.size();
  std::string merges_text = "#version: 0.2\n";
  for (const auto& [a, b] : LearnBpeMerges(CaptionCorpus(), spec.bpe_merges)) {
    if (!vocab.contains(a + b)) vocab[a + b] = vocab.size();
    merges_text += a + " " + b + "\n";
  }
  const int64_t bos = static_cast<int64_t>(vocab.size());
  vocab["<|startoftext|>"] = bos;
  vocab["<|endoftext|>"] = bos + 1;
  if (!vocab.contains(spec.pad_token)) {
    return absl::InvalidArgumentError(absl::StrCat("pad token '", spec.pad_token, "' is not in the vocabulary"));
  }
  ClipVocabulary out;
  out.vocab_size = static_cast<int>(vocab.size());
  out.bos_id = bos;
  out.eos_id = bos + 1;
  out.pad_id = vocab[spec.pad_token].get<int64_t>();
  if (absl::Status s = WriteJson(d + "/vocab.json", vocab); !s.ok()) return s;
  std::ofstream(d + "/merges.txt") << merges_text;
  const json special = {{"bos_token", "<|startoftext|>"}, {"eos_token", "<|endoftext|>"},
                        {"pad_token", spec.pad_token}, {"unk_token", "<|endoftext|>"}};
  json config = {{"tokenizer_class", "CLIPTokenizer"}, {"model_max_length", 77}, {"do_lower_case", true},
                 {"add_prefix_space", false}, {"errors", "replace"}};
  config.update(special);
  if (spec.pad_token != "<|endoftext|>") {
    // As OpenCLIP-bigG's tokenizer_config.json lists its "!" pad.
    config["added_tokens_decoder"] = {{std::to_string(out.pad_id),
                                       {{"content", spec.pad_token}, {"lstrip", false}, {"normalized", false},
                                        {"rstrip", false}, {"single_word", false}, {"special", true}}}};
  }
  if (absl::Status s = WriteJson(d + "/tokenizer_config.json", config); !s.ok()) return s;
  if (absl::Status s = WriteJson(d + "/special_tokens_map.json", special); !s.ok()) return s;
  return out;
}

absl::StatusOr<int> WriteT5Tokenizer(const std::string& d, int spm_vocab, int model_max_length) {
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  const std::string corpus_path = d + "/corpus.txt";
  {
    std::ofstream c(corpus_path);
    for (const auto& line : CaptionCorpus()) c << line << "\n";
  }
  if (absl::Status s = worker::tokenizers::TrainSentencePiece(absl::StrCat(
          "--input=", corpus_path, " --model_prefix=", d, "/spiece --vocab_size=", spm_vocab,
          " --model_type=unigram --character_coverage=1.0 --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1",
          " --num_threads=1 --hard_vocab_limit=false --minloglevel=2"));
      !s.ok()) {
    return s;
  }
  std::error_code ec;
  std::filesystem::remove(corpus_path, ec);
  std::filesystem::remove(d + "/spiece.vocab", ec);
  const json special = {{"eos_token", "</s>"}, {"pad_token", "<pad>"}, {"unk_token", "<unk>"}};
  json config = {{"tokenizer_class", "T5Tokenizer"}, {"model_max_length", model_max_length}, {"extra_ids", 0},
                 {"legacy", true}};
  config.update(special);
  if (absl::Status s = WriteJson(d + "/tokenizer_config.json", config); !s.ok()) return s;
  if (absl::Status s = WriteJson(d + "/special_tokens_map.json", special); !s.ok()) return s;
  // The trainer may stop short of the asked size on a small corpus.
  auto spm = worker::tokenizers::T5Tokenizer::Load(d + "/spiece.model");
  if (!spm.ok()) return spm.status();
  return (*spm)->vocab_size();
}

absl::Status WriteClipTextEncoder(const std::string& d, const worker::text::ClipTextConfig& cc, int64_t pad_id,
                                  at::Generator& generator, at::ScalarType dtype) {
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  auto clip = worker::text::ClipTextModel::Create(cc, at::kFloat);
  if (!clip.ok()) return clip.status();
  NamedTensors params = ModuleParameters((*clip)->module());
  InitialiseRandom(params, generator, 0.02);
  if (absl::Status s = worker::weights::WriteSafetensors(d + "/model.safetensors", Cast(params, dtype)); !s.ok()) return s;
  const std::string architecture = cc.with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel";
  return WriteJson(d + "/config.json",
                   {{"architectures", {architecture}}, {"model_type", "clip_text_model"},
                    {"vocab_size", cc.vocab_size}, {"hidden_size", cc.hidden_size},
                    {"intermediate_size", cc.intermediate_size}, {"num_hidden_layers", cc.num_hidden_layers},
                    {"num_attention_heads", cc.num_attention_heads},
                    {"max_position_embeddings", cc.max_position_embeddings}, {"hidden_act", cc.hidden_act},
                    {"layer_norm_eps", cc.layer_norm_eps},
                    {"projection_dim", cc.with_projection ? cc.projection_dim : cc.hidden_size},
                    {"bos_token_id", cc.eos_token_id - 1}, {"eos_token_id", cc.eos_token_id}, {"pad_token_id", pad_id},
                    {"torch_dtype", TorchDtype(dtype)}});
}

absl::Status WriteT5Encoder(const std::string& d, const worker::text::T5Config& tc, bool local_attention,
                            at::Generator& generator, at::ScalarType dtype) {
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  auto t5 = worker::text::T5Encoder::Create(tc, at::kFloat);
  if (!t5.ok()) return t5.status();
  NamedTensors params = ModuleParameters((*t5)->module());
  InitialiseRandom(params, generator, 0.05);
  if (local_attention) SetLocalT5Attention(params, tc);
  for (const auto& [name, t] : NamedTensors(params)) {
    if (name == "shared.weight") params.push_back({"encoder.embed_tokens.weight", t});
  }
  if (absl::Status s = worker::weights::WriteSafetensors(d + "/model.safetensors", Cast(params, dtype)); !s.ok()) return s;
  return WriteJson(d + "/config.json",
                   {{"architectures", {"T5EncoderModel"}}, {"model_type", "t5"},
                    {"vocab_size", tc.vocab_size}, {"d_model", tc.d_model}, {"d_kv", tc.d_kv},
                    {"d_ff", tc.d_ff}, {"num_layers", tc.num_layers}, {"num_heads", tc.num_heads},
                    {"relative_attention_num_buckets", tc.relative_attention_num_buckets},
                    {"relative_attention_max_distance", tc.relative_attention_max_distance},
                    {"feed_forward_proj", "gated-gelu"}, {"dense_act_fn", "gelu_new"},
                    {"is_gated_act", true}, {"layer_norm_epsilon", tc.layer_norm_epsilon}, {"tie_word_embeddings", false},
                    {"pad_token_id", 0}, {"eos_token_id", 1}, {"decoder_start_token_id", 0},
                    {"is_encoder_decoder", true}, {"torch_dtype", TorchDtype(dtype)}});
}

absl::Status WriteVae(const std::string& dir, const worker::vae::VaeConfig& c, const NamedTensors& params, at::ScalarType dtype) {
  const std::string d = dir + "/vae";
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  if (absl::Status s = worker::weights::WriteSafetensors(d + "/diffusion_pytorch_model.safetensors", Cast(params, dtype)); !s.ok()) {
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

absl::Status WriteRandomVae(const std::string& dir, const worker::vae::VaeConfig& config, at::Generator& generator,
                            at::ScalarType dtype) {
  auto encoder = worker::vae::VaeEncoder::Create(config, at::kFloat);
  if (!encoder.ok()) return encoder.status();
  auto decoder = worker::vae::VaeDecoder::Create(config, at::kFloat);
  if (!decoder.ok()) return decoder.status();
  NamedTensors params = (*encoder)->NamedParameters();
  for (auto& kv : (*decoder)->NamedParameters()) params.push_back(kv);
  InitialiseRandom(params, generator, 0.05);
  return WriteVae(dir, config, params, dtype);
}

absl::Status WriteScheduler(const std::string& dir, const worker::flux::FlowMatchSchedulerConfig& c) {
  if (absl::Status s = CreateDir(dir + "/scheduler"); !s.ok()) return s;
  return WriteJson(dir + "/scheduler/scheduler_config.json",
                   {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"_diffusers_version", "0.42.1"},
                    {"base_image_seq_len", c.base_image_seq_len}, {"base_shift", c.base_shift},
                    {"max_image_seq_len", c.max_image_seq_len}, {"max_shift", c.max_shift},
                    {"num_train_timesteps", c.num_train_timesteps}, {"shift", c.shift},
                    {"use_dynamic_shifting", c.use_dynamic_shifting}});
}

}  // namespace ditserve::tools::make_model
