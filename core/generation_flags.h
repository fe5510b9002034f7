#pragma once

// The command-line flags that describe a generation (model, prompt, size,
// steps, guidance, seed, text length, dtype), defined once and shared by
// ditserve-generate (one process) and the gang's binaries (ditserve-worker,
// and ditserve-run, which forwards them), so every binary accepts the same
// names with the same defaults and meanings. Torch-free.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/step_cache.h"
#include "core/vae_decode_options.h"

namespace ditserve::core {

// Everything but the prompts: ditserve-generate takes one (PromptFlag()),
// the gang's binaries collect repeated --prompt flags (TakeRepeatedPrompts).
struct GenerationFlags {
  std::string model;
  std::string negative_prompt;
  int height = 0;  // 0: the model's sample_size
  int width = 0;
  int num_inference_steps = 28;
  double guidance_scale = -1;  // negative: the family's default
  double true_cfg_scale = 1.0;
  uint64_t seed = 0;
  int max_sequence_length = 0;  // 0: the model family's default
  std::string dtype;            // "", "f32" or "bf16"
  // Step caching (core/step_cache.h): xDiT's --use_fbcache / --use_teacache
  // and the threshold (negative: the method's default).
  bool use_fbcache = false;
  bool use_teacache = false;
  double cache_threshold = -1;
  // The VAE decode: --use_parallel_vae, --vae_tiling, --vae_tile_size,
  // --vae_memory_cap_mb.
  VaeDecodeOptions vae;
  // --model_root: every model file must resolve under it (core/model_root.h);
  // empty: no confinement.
  std::string model_root;
};

// The step cache the flags ask for: INVALID_ARGUMENT naming the flag for
// both methods at once, or a threshold out of range (or without a method).
absl::StatusOr<StepCacheOptions> StepCacheFromFlags(const GenerationFlags& flags);

// INVALID_ARGUMENT naming --dtype unless it is "", "f32" or "bf16".
absl::Status ValidateDtype(const GenerationFlags& flags);
// The dtype a run computes in: --dtype, else "bf16" on CUDA and "f32" on CPU.
std::string ResolvedDtype(const GenerationFlags& flags, bool cuda);

// The values after absl::ParseCommandLine.
GenerationFlags GenerationFlagsFromCommandLine();
// The (last) --prompt after absl::ParseCommandLine.
std::string PromptFlag();

}  // namespace ditserve::core
