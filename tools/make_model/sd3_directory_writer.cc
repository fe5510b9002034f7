#include "tools/make_model/sd3_directory_writer.h"

#include <nlohmann/json.hpp>

#include "worker/weights/safetensors_writer.h"

namespace ditserve::tools::make_model {

using json = nlohmann::ordered_json;

absl::Status WriteSd3TextComponents(const std::string& d, Sd3TextComponentsSpec& spec, at::Generator& generator,
                                    at::ScalarType dtype) {
  const ClipTokenizerSpec clip_l_tokenizer{spec.bpe_merges, /*gpt2_symbol_order=*/true, "<|endoftext|>"};
  const ClipTokenizerSpec clip_g_tokenizer{spec.bpe_merges, /*gpt2_symbol_order=*/true, "!"};
  auto vocab_l = WriteClipTokenizer(d + "/tokenizer", clip_l_tokenizer);
  if (!vocab_l.ok()) return vocab_l.status();
  auto vocab_g = WriteClipTokenizer(d + "/tokenizer_2", clip_g_tokenizer);
  if (!vocab_g.ok()) return vocab_g.status();
  auto spm_vocab = WriteT5Tokenizer(d + "/tokenizer_3", spec.spm_vocab, spec.t5_model_max_length);
  if (!spm_vocab.ok()) return spm_vocab.status();
  for (auto [clip, vocab] : {std::pair{&spec.clip_l, &*vocab_l}, {&spec.clip_g, &*vocab_g}}) {
    clip->vocab_size = vocab->vocab_size;
    clip->eos_token_id = static_cast<int>(vocab->eos_id);
    clip->with_projection = true;
  }
  spec.t5.vocab_size = *spm_vocab;
  if (absl::Status s = WriteClipTextEncoder(d + "/text_encoder", spec.clip_l, vocab_l->pad_id, generator, dtype);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteClipTextEncoder(d + "/text_encoder_2", spec.clip_g, vocab_g->pad_id, generator, dtype);
      !s.ok()) {
    return s;
  }
  return WriteT5Encoder(d + "/text_encoder_3", spec.t5, /*local_attention=*/false, generator, dtype);
}

absl::Status WriteSd3Transformer(const std::string& dir, const worker::sd3::Sd3TransformerConfig& t,
                                 const NamedTensors& params, at::ScalarType dtype, int shards) {
  const std::string d = dir + "/transformer";
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  if (absl::Status s = worker::weights::WriteSafetensorsCheckpoint(d, "diffusion_pytorch_model", Cast(params, dtype), shards);
      !s.ok()) {
    return s;
  }
  return WriteJson(d + "/config.json",
                   {{"_class_name", "SD3Transformer2DModel"}, {"_diffusers_version", "0.42.1"},
                    {"attention_head_dim", t.attention_head_dim}, {"caption_projection_dim", t.caption_projection_dim},
                    {"dual_attention_layers", t.dual_attention_layers}, {"in_channels", t.in_channels},
                    {"joint_attention_dim", t.joint_attention_dim}, {"num_attention_heads", t.num_attention_heads},
                    {"num_layers", t.num_layers}, {"out_channels", t.out_channels}, {"patch_size", t.patch_size},
                    {"pooled_projection_dim", t.pooled_projection_dim},
                    {"pos_embed_max_size", t.pos_embed_max_size},
                    {"qk_norm", t.qk_norm.empty() ? json(nullptr) : json(t.qk_norm)}, {"sample_size", t.sample_size}});
}

absl::Status WriteSd3ModelIndex(const std::string& dir) {
  if (absl::Status s = CreateDir(dir); !s.ok()) return s;
  return WriteJson(dir + "/model_index.json",
                   {{"_class_name", "StableDiffusion3Pipeline"}, {"_diffusers_version", "0.42.1"},
                    {"feature_extractor", {nullptr, nullptr}}, {"image_encoder", {nullptr, nullptr}},
                    {"scheduler", {"diffusers", "FlowMatchEulerDiscreteScheduler"}},
                    {"text_encoder", {"transformers", "CLIPTextModelWithProjection"}},
                    {"text_encoder_2", {"transformers", "CLIPTextModelWithProjection"}},
                    {"text_encoder_3", {"transformers", "T5EncoderModel"}},
                    {"tokenizer", {"transformers", "CLIPTokenizer"}},
                    {"tokenizer_2", {"transformers", "CLIPTokenizer"}},
                    {"tokenizer_3", {"transformers", "T5TokenizerFast"}},
                    {"transformer", {"diffusers", "SD3Transformer2DModel"}},
                    {"vae", {"diffusers", "AutoencoderKL"}}});
}

}  // namespace ditserve::tools::make_model
