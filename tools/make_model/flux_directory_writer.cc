#include "tools/make_model/flux_directory_writer.h"

#include <nlohmann/json.hpp>

#include "worker/weights/safetensors_writer.h"

namespace ditserve::tools::make_model {

using json = nlohmann::ordered_json;

absl::Status WriteTextComponents(const std::string& d, TextComponentsSpec& spec, at::Generator& generator,
                                 at::ScalarType dtype) {
  for (const char* sub : {"tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2"}) {
    if (absl::Status s = CreateDir(d + "/" + sub); !s.ok()) return s;
  }
  ClipTokenizerSpec clip_tokenizer;
  clip_tokenizer.bpe_merges = spec.bpe_merges;
  auto vocab = WriteClipTokenizer(d + "/tokenizer", clip_tokenizer);
  if (!vocab.ok()) return vocab.status();
  auto spm_vocab = WriteT5Tokenizer(d + "/tokenizer_2", spec.spm_vocab, spec.t5_model_max_length);
  if (!spm_vocab.ok()) return spm_vocab.status();
  spec.clip.vocab_size = vocab->vocab_size;
  spec.clip.eos_token_id = static_cast<int>(vocab->eos_id);
  spec.t5.vocab_size = *spm_vocab;
  if (absl::Status s = WriteClipTextEncoder(d + "/text_encoder", spec.clip, vocab->pad_id, generator, dtype); !s.ok()) {
    return s;
  }
  return WriteT5Encoder(d + "/text_encoder_2", spec.t5, spec.local_t5_attention, generator, dtype);
}

absl::Status WriteTransformer(const std::string& dir, const worker::flux::FluxTransformerConfig& t, const NamedTensors& params,
                              at::ScalarType dtype, int shards) {
  const std::string d = dir + "/transformer";
  if (absl::Status s = CreateDir(d); !s.ok()) return s;
  if (absl::Status s = worker::weights::WriteSafetensorsCheckpoint(d, "diffusion_pytorch_model", Cast(params, dtype), shards);
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

}  // namespace ditserve::tools::make_model
