#pragma once

// Family-neutral writers for the components of a diffusers pipeline
// directory (random weights for ditserve-make-model, trained ones for
// ditserve-train-demo): tokenizers learned from CaptionCorpus(), CLIP and
// T5 text encoders, the VAE and the scheduler, each written as its
// subdirectory's config and safetensors weights in the layout diffusers and
// transformers read. Every writer is deterministic: the same arguments and
// generator state give byte-identical files.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/models/text/clip_text_model.h"
#include "worker/models/text/t5_encoder.h"
#include "worker/models/vae/autoencoder_kl.h"

namespace torch::nn {
class Module;
}

namespace ditserve::tools::make_model {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The parameters of `module` named prefix + dotted name (live tensors).
NamedTensors ModuleParameters(torch::nn::Module& module, const std::string& prefix = "");
// Its buffers, likewise (SD3's position embedding, which diffusers saves).
NamedTensors ModuleBuffers(torch::nn::Module& module, const std::string& prefix = "");

// Seeded initialisation in place: biases 0, norm weights 1, other tensors
// N(0, std) drawn in order from `generator`.
void InitialiseRandom(NamedTensors& params, at::Generator& generator, double std);

// Detached contiguous copies in dtype `t` (for writing).
NamedTensors Cast(NamedTensors params, at::ScalarType t);
// config.json's torch_dtype for `t`: "float32", "bfloat16" or "float16".
std::string TorchDtype(at::ScalarType t);
// mkdir -p; PERMISSION_DENIED naming the path on failure.
absl::Status CreateDir(const std::string& path);

// A CLIP byte-level BPE tokenizer directory (vocab.json, merges.txt,
// tokenizer_config.json, special_tokens_map.json) learned from
// CaptionCorpus().
struct ClipTokenizerSpec {
  int bpe_merges = 200;
  // The byte symbols in GPT-2's order (printable bytes first, so "!" is id
  // 0, as in the real CLIP vocabularies) rather than in byte order.
  bool gpt2_symbol_order = false;
  // The pad token: "<|endoftext|>" (CLIP ViT-L) or "!" (OpenCLIP bigG,
  // SD3's tokenizer_2, which then lists it as an added special token).
  std::string pad_token = "<|endoftext|>";
};
struct ClipVocabulary {
  int vocab_size = 0;
  int64_t bos_id = 0, eos_id = 0, pad_id = 0;
};
absl::StatusOr<ClipVocabulary> WriteClipTokenizer(const std::string& subdir, const ClipTokenizerSpec& spec);

// A T5 tokenizer directory: spiece.model (a SentencePiece unigram model of
// `spm_vocab` pieces trained on CaptionCorpus()), tokenizer_config.json
// with `model_max_length` and special_tokens_map.json. Returns the trained
// vocabulary size (the trainer may stop short of spm_vocab).
absl::StatusOr<int> WriteT5Tokenizer(const std::string& subdir, int spm_vocab, int model_max_length);

// A CLIPTextModel, or a CLIPTextModelWithProjection when
// config.with_projection, with seeded random weights (std 0.02) in
// `dtype`: model.safetensors and config.json. `pad_id`: config.json's
// pad_token_id.
absl::Status WriteClipTextEncoder(const std::string& subdir, const worker::text::ClipTextConfig& config, int64_t pad_id,
                                  at::Generator& generator, at::ScalarType dtype);

// A T5EncoderModel (T5 v1.1: gated-gelu) with seeded random weights (std
// 0.05) in `dtype`. `local_attention`: see TextComponentsSpec in
// flux_directory_writer.h.
absl::Status WriteT5Encoder(const std::string& subdir, const worker::text::T5Config& config, bool local_attention,
                            at::Generator& generator, at::ScalarType dtype);

// vae/: config.json (an AutoencoderKL with DownEncoderBlock2D and
// UpDecoderBlock2D blocks) and the encoder and decoder weights in `dtype`.
absl::Status WriteVae(const std::string& dir, const worker::vae::VaeConfig& config, const NamedTensors& params,
                      at::ScalarType dtype);

// vae/ with seeded random weights (std 0.05, drawn from `generator`:
// encoder, then decoder) in `dtype`, via WriteVae.
absl::Status WriteRandomVae(const std::string& dir, const worker::vae::VaeConfig& config, at::Generator& generator,
                            at::ScalarType dtype);

// scheduler/scheduler_config.json (FlowMatchEulerDiscreteScheduler).
absl::Status WriteScheduler(const std::string& dir, const worker::flux::FlowMatchSchedulerConfig& config);

// `j` as diffusers and transformers write JSON (2-space indent, a final
// newline), keys in insertion order. PERMISSION_DENIED naming the path.
absl::Status WriteJson(const std::string& path, const nlohmann::ordered_json& j);

}  // namespace ditserve::tools::make_model
