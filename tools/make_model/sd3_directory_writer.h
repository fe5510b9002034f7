#pragma once

// Writers for the SD3-specific components of a diffusers
// StableDiffusion3Pipeline directory (Stable Diffusion 3 and 3.5): its
// three tokenizers and text encoders, the SD3Transformer2DModel and
// model_index.json. The VAE and scheduler writers are the family-neutral
// ones in directory_writer.h.

#include <string>

#include <ATen/core/Generator.h>

#include "absl/status/status.h"
#include "tools/make_model/directory_writer.h"
#include "worker/models/sd3/sd3_config.h"
#include "worker/models/text/clip_text_model.h"
#include "worker/models/text/t5_encoder.h"

namespace ditserve::tools::make_model {

// tokenizer/ and tokenizer_2/: one byte-level BPE vocabulary and merges
// learned from CaptionCorpus() (the byte symbols in GPT-2's order, as the
// real CLIP vocabularies: "!" is id 0), padded with <|endoftext|> (CLIP
// ViT-L) and with "!" (OpenCLIP bigG) respectively; tokenizer_3/spiece.model
// (a SentencePiece unigram model trained on the corpus); text_encoder/ and
// text_encoder_2/ (CLIPTextModelWithProjection) and text_encoder_3/ (T5
// v1.1 encoder) with seeded random weights drawn from `generator` in that
// order (CLIPs std 0.02, T5 std 0.05).
struct Sd3TextComponentsSpec {
  // vocab_size, eos_token_id and with_projection are set by the writer.
  worker::text::ClipTextConfig clip_l;
  worker::text::ClipTextConfig clip_g;
  worker::text::T5Config t5;  // vocab_size: set by the writer
  int bpe_merges = 200;
  int spm_vocab = 64;
  int t5_model_max_length = 512;  // tokenizer_3's, as SD3's
};
absl::Status WriteSd3TextComponents(const std::string& dir, Sd3TextComponentsSpec& spec, at::Generator& generator,
                                    at::ScalarType dtype);

// transformer/: config.json as diffusers writes an SD3Transformer2DModel's
// and the weights (`params`, with the pos_embed.pos_embed buffer, which
// diffusers saves), sharded into `shards` files with an index when
// shards > 1, cast to `dtype`.
absl::Status WriteSd3Transformer(const std::string& dir, const worker::sd3::Sd3TransformerConfig& config,
                                 const NamedTensors& params, at::ScalarType dtype, int shards = 1);

// model_index.json of a StableDiffusion3Pipeline, naming every component
// (image_encoder and feature_extractor null, as diffusers writes them).
absl::Status WriteSd3ModelIndex(const std::string& dir);

}  // namespace ditserve::tools::make_model
