#pragma once

// Writers for the Flux-specific components of a diffusers FluxPipeline
// directory, shared by ditserve-make-model (random weights) and
// ditserve-train-demo (trained transformer and VAE); the family-neutral
// ones (VAE, scheduler, tokenizers, text encoders) are in
// directory_writer.h, included here.

#include <string>

#include <ATen/core/Generator.h>

#include "absl/status/status.h"
#include "tools/make_model/directory_writer.h"
#include "worker/models/flux/flux_config.h"
#include "worker/models/text/clip_text_model.h"
#include "worker/models/text/t5_encoder.h"

namespace ditserve::tools::make_model {

// The text side of a Flux directory: tokenizer/ (a byte-level BPE
// vocabulary and merges learned from CaptionCorpus()), tokenizer_2/spiece.model
// (a SentencePiece unigram model trained on it), text_encoder/ (CLIP) and
// text_encoder_2/ (T5 v1.1) with seeded random weights drawn from
// `generator` (CLIP first, std 0.02; then T5, std 0.05).
struct TextComponentsSpec {
  worker::text::ClipTextConfig clip;  // vocab_size, eos_token_id: set by the writer
  worker::text::T5Config t5;          // vocab_size: set by the writer
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
absl::Status WriteTransformer(const std::string& dir, const worker::flux::FluxTransformerConfig& config,
                              const NamedTensors& params, at::ScalarType dtype, int shards = 1);

// model_index.json of a FluxPipeline.
absl::Status WriteModelIndex(const std::string& dir);

}  // namespace ditserve::tools::make_model
