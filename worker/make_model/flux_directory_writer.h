#pragma once

// Writers for the components of a diffusers FluxPipeline directory, shared
// by ditserve-make-model (random weights) and ditserve-train-demo (trained
// transformer and VAE): each writes its subdirectory's config and
// safetensors weights in the layout diffusers and transformers read.

#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "worker/models/flux/flow_match_scheduler.h"
#include "worker/models/flux/flux_config.h"
#include "worker/models/text/clip_text_model.h"
#include "worker/models/text/t5_encoder.h"
#include "worker/models/vae/autoencoder_kl.h"

namespace torch::nn {
class Module;
}

namespace ditserve::worker::make_model {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The parameters of `module` named prefix + dotted name (live tensors).
NamedTensors ModuleParameters(torch::nn::Module& module, const std::string& prefix = "");

// Seeded initialisation in place: biases 0, norm weights 1, other tensors
// N(0, std) drawn in order from `generator`.
void InitialiseRandom(NamedTensors& params, at::Generator& generator, double std);

// The text side of a directory: tokenizer/ (a byte-level BPE vocabulary and
// merges learned from CaptionCorpus()), tokenizer_2/spiece.model (a
// SentencePiece unigram model trained on it), text_encoder/ (CLIP) and
// text_encoder_2/ (T5 v1.1) with seeded random weights drawn from
// `generator` (CLIP first, std 0.02; then T5, std 0.05).
struct TextComponentsSpec {
  text::ClipTextConfig clip;  // vocab_size, eos_token_id: set by the writer
  text::T5Config t5;          // vocab_size: set by the writer
  int bpe_merges = 200;
  int spm_vocab = 64;
  // tokenizer_2's model_max_length: the T5 length pipelines use by default.
  int t5_model_max_length = 512;
  // When set, T5's relative attention bias is not random but makes head h
  // of H attend around the token at offset 2h - (H - 1) (-3, -1, 1, 3 for
  // four heads: two look back, two ahead) with weight falling as
  // exp(-distance / 2), so that a frozen random encoder's output at a word
  // mixes in its neighbouring words in order ("a red circle on a blue
  // background" differs from "a blue circle on a red background": the
  // pieces of "background" carry "blue") and hardly depends on distant
  // padding.
  bool local_t5_attention = false;
};
absl::Status WriteTextComponents(const std::string& dir, TextComponentsSpec& spec, at::Generator& generator,
                                 at::ScalarType dtype);

// transformer/: config.json and the weights (sharded into `shards` files
// with an index when shards > 1), cast to `dtype`.
absl::Status WriteTransformer(const std::string& dir, const flux::FluxTransformerConfig& config,
                              const NamedTensors& params, at::ScalarType dtype, int shards = 1);

// vae/: config.json (an AutoencoderKL with DownEncoderBlock2D and
// UpDecoderBlock2D blocks) and the encoder and decoder weights in `dtype`.
absl::Status WriteVae(const std::string& dir, const vae::VaeConfig& config, const NamedTensors& params,
                      at::ScalarType dtype);

// scheduler/scheduler_config.json (FlowMatchEulerDiscreteScheduler).
absl::Status WriteScheduler(const std::string& dir, const flux::FlowMatchSchedulerConfig& config);

// model_index.json of a FluxPipeline.
absl::Status WriteModelIndex(const std::string& dir);

}  // namespace ditserve::worker::make_model
