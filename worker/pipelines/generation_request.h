#pragma once

// One image to generate, family-neutral: what the gang's pipeline, the
// batch job and the serve loop pass around (the control protocol's Item and
// the command line's flags convert to it in one place each).
//
// Initial noise: PyTorch's CPU generator (mt19937) seeded with `seed`,
// float32 normals drawn exactly as torch.randn(shape, generator=
// torch.Generator().manual_seed(seed)) does — diffusers' pipelines with a
// CPU generator draw the same latents — then moved to the run device. So
// the same seed gives the same noise on every rank, every device and every
// run.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/generation_flags.h"
#include "core/step_cache.h"

namespace ditserve::worker::pipelines {

struct GenerationRequest {
  std::string prompt;
  // The unconditional prompt of classifier-free guidance ("" is the empty
  // prompt, as diffusers encodes it).
  std::string negative_prompt;
  int height = 1024;
  int width = 1024;
  int num_inference_steps = 28;
  // Negative: the family's default (see ResolveGuidance in
  // core/generation_plan.h: Flux's guidance embedding, SD3's CFG scale).
  double guidance_scale = -1;
  double true_cfg_scale = 1.0;  // Flux's CFG scale (> 1 runs CFG)
  uint64_t seed = 0;
  // T5 tokens; 0: the family's default.
  int max_sequence_length = 0;
  // Step caching (core/step_cache.h). Requests of one batch must agree on
  // the method; thresholds may differ (each request decides for itself).
  core::StepCacheOptions cache;
};

// The request for `prompt` from the generation flags, with `seed`; a height
// or width of 0 takes `default_size` (the model's sample size).
GenerationRequest MakeGenerationRequest(const core::GenerationFlags& flags, const std::string& prompt, uint64_t seed,
                                        int default_size);

struct GenerationResult {
  at::Tensor image;    // uint8 [H, W, 3]
  at::Tensor latents;  // final packed latents [1, S, 4C] float32
  // Per denoising step, whether the blocks ran (true) or the step cache
  // stood in for them; every step computes without a cache.
  std::vector<bool> step_computed;
  int cached_steps() const {
    int n = 0;
    for (bool computed : step_computed) n += computed ? 0 : 1;
    return n;
  }
};

// Called after each denoising step with (step, total); returning false
// cancels the run (the result is CANCELLED).
using StepCallback = std::function<bool(int step, int total)>;

}  // namespace ditserve::worker::pipelines
