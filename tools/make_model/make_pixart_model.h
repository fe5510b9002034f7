#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace ditserve::tools::make_model {

struct MakePixArtOptions {
  // pixart-sigma (PixArtSigmaPipeline: T5 max length 300, SDXL's VAE
  // scaling 0.13025) or pixart-alpha (PixArtAlphaPipeline: 120, SD's VAE
  // 0.18215, and the micro-conditions of a sample_size-128 transformer).
  std::string family = "pixart-sigma";
  // tiny: tests (4 heads of 24, 4 blocks); small: benchmarks (8 heads of
  // 72 — PixArt's head width — 6 blocks, 512×512 by default).
  std::string preset = "tiny";
  std::string out_dir;
  std::string dtype = "f32";  // f32 | bf16
  uint64_t seed = 0;
};

// Writes a complete diffusers PixArt{Sigma,Alpha}Pipeline directory with
// seeded random weights: model_index.json, scheduler/
// (DPMSolverMultistepScheduler as the PixArt checkpoints configure it:
// dpmsolver++ order 2, linear betas), tokenizer/ (a SentencePiece model of
// the caption corpus), text_encoder/ (T5 v1.1 encoder), transformer/
// (PixArtTransformer2DModel with learned variance, out_channels 8) and
// vae/ (AutoencoderKL, 4 latent channels, with quant convs). The same
// options give byte-identical files. INVALID_ARGUMENT for an unknown
// family, preset or dtype.
absl::Status MakePixArtModel(const MakePixArtOptions& options);

}  // namespace ditserve::tools::make_model
