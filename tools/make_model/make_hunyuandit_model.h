#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace ditserve::tools::make_model {

struct MakeHunyuanDiTOptions {
  // tiny: tests (4 heads of 24, 6 blocks: two long skips, room for
  // Ulysses 4 and PipeFusion 2 across a skip); small: benchmarks (8 heads
  // of 88 — HunyuanDiT's head width — 6 blocks, 512×512 by default).
  std::string preset = "tiny";
  std::string out_dir;
  std::string dtype = "f32";  // f32 | bf16
  uint64_t seed = 0;
};

// Writes a complete diffusers HunyuanDiTPipeline directory (v1.2's layout:
// no style or image-meta-size condition) with seeded random weights:
// model_index.json, scheduler/ (DDPMScheduler as the HunyuanDiT
// checkpoints configure it: scaled_linear betas 0.00085–0.03,
// v_prediction, leading spacing with offset 1, fixed_small variance),
// tokenizer/ + text_encoder/ (a WordPiece vocabulary of the caption corpus
// and a BertModel), tokenizer_2/ + text_encoder_2/ (a SentencePiece model
// and a T5 v1.1 encoder, mT5's architecture), transformer/
// (HunyuanDiT2DModel with learned variance; text_len 77, text_len_t5 256 as
// the pipeline requires) and vae/ (AutoencoderKL, 4 latent channels,
// scaling 0.13025). The same options give byte-identical files.
// INVALID_ARGUMENT for an unknown preset or dtype.
absl::Status MakeHunyuanDiTModel(const MakeHunyuanDiTOptions& options);

}  // namespace ditserve::tools::make_model
