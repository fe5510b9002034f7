#pragma once

// The command-line flags that describe a generation (model, prompt, size,
// steps, guidance, seed, text length, dtype), defined once and shared by
// ditserve-generate (one process) and the gang's binaries (ditserve-worker,
// and ditserve-run, which forwards them), so every binary accepts the same
// names with the same defaults and meanings. Torch-free.

#include <cstdint>
#include <string>

namespace ditserve::worker {

struct GenerationFlags {
  std::string model;
  std::string prompt;  // the last --prompt (the gang's binaries collect repeats themselves)
  std::string negative_prompt;
  int height = 0;  // 0: the model's sample_size
  int width = 0;
  int num_inference_steps = 28;
  double guidance_scale = 3.5;
  double true_cfg_scale = 1.0;
  uint64_t seed = 0;
  int max_sequence_length = 0;  // 0: the model's tokenizer_2 model_max_length
  std::string dtype;            // "", "f32" or "bf16"
};

// The values after absl::ParseCommandLine.
GenerationFlags GenerationFlagsFromCommandLine();

}  // namespace ditserve::worker
