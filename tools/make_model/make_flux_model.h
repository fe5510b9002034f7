#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace ditserve::tools::make_model {

struct MakeFluxOptions {
  std::string preset = "tiny";  // tiny | small | flux-dev
  std::string out_dir;
  std::string dtype = "f32";    // f32 | bf16
  uint64_t seed = 0;
  int shards = 1;               // transformer shards
};

// Writes a complete diffusers FluxPipeline directory with seeded random
// weights: model_index.json, scheduler/, tokenizer/ (a BPE vocabulary and
// merges learned from the carried captions), tokenizer_2/spiece.model (a
// SentencePiece unigram model trained on them), text_encoder/ (CLIP),
// text_encoder_2/ (T5 v1.1), transformer/ and vae/ (encoder and decoder),
// each with its config and safetensors weights. The same options give
// byte-identical files. INVALID_ARGUMENT for an unknown preset or dtype.
absl::Status MakeFluxModel(const MakeFluxOptions& options);

}  // namespace ditserve::tools::make_model
