#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace ditserve::tools::make_model {

struct MakeSd3Options {
  // The transformer layout: sd3 (SD3-medium: neither qk_norm nor dual
  // attention), sd3.5-large (qk_norm "rms_norm") or sd3.5-medium (qk_norm
  // "rms_norm" and dual attention in the first blocks).
  std::string variant = "sd3";
  // tiny: tests (4 heads of 16, 4 blocks, 64×64 by default, seconds per
  // step on a CPU); small: benchmarks (8 heads of 64, 6 blocks, 512×512).
  std::string preset = "tiny";
  std::string out_dir;
  std::string dtype = "f32";  // f32 | bf16
  uint64_t seed = 0;
  int shards = 1;             // transformer shards
};

// Writes a complete diffusers StableDiffusion3Pipeline directory with
// seeded random weights (see WriteSd3TextComponents for the text side):
// model_index.json, scheduler/ (FlowMatchEulerDiscreteScheduler, shift
// 3.0), the three tokenizers and text encoders, transformer/
// (SD3Transformer2DModel, the variant's layout scaled down) and vae/
// (AutoencoderKL, 16 latent channels, SD3's scaling_factor 1.5305 and
// shift_factor 0.0609). The same options give byte-identical files.
// INVALID_ARGUMENT for an unknown variant, preset or dtype.
absl::Status MakeSd3Model(const MakeSd3Options& options);

}  // namespace ditserve::tools::make_model
