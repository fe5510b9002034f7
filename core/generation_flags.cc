#include "core/generation_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, model, "",
          "diffusers directory of a Flux or SD3 pipeline (model_index.json, transformer/, vae/, …); every rank of a gang reads it");
ABSL_FLAG(std::string, prompt, "",
          "What to draw; ditserve-run and ditserve-worker take --prompt repeated for several images "
          "(image i uses --seed + i)");
ABSL_FLAG(std::string, negative_prompt, "", "What not to draw: the unconditional prompt of classifier-free guidance (default empty)");
ABSL_FLAG(int, height, 0, "Image height in pixels, a multiple of 16 for FLUX.1 and SD3 (0: the model's sample_size)");
ABSL_FLAG(int, width, 0, "Image width in pixels, a multiple of 16 for FLUX.1 and SD3 (0: the model's sample_size)");
ABSL_FLAG(int, num_inference_steps, 28, "Denoising steps");
ABSL_FLAG(double, guidance_scale, -1,
          "Flux: the guidance embedding value (guidance-distilled models such as FLUX.1-dev; default 3.5); "
          "SD3: the classifier-free guidance scale (default 7.0; > 1 runs CFG). Negative: the family's default");
ABSL_FLAG(double, true_cfg_scale, 1.0,
          "Flux: classifier-free guidance scale (> 1 runs CFG against --negative_prompt, default empty)");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the (first) image's initial noise (PyTorch CPU generator)");
ABSL_FLAG(int, max_sequence_length, 0,
          "T5 tokens (prompt truncated beyond); 0: the model's default (Flux: tokenizer_2 model_max_length, 512 for FLUX.1; SD3: 256)");
ABSL_FLAG(std::string, dtype, "", "Weights and activations: f32 or bf16 (default: f32 on CPU, bf16 on CUDA)");

namespace ditserve::core {

GenerationFlags GenerationFlagsFromCommandLine() {
  GenerationFlags f;
  f.model = absl::GetFlag(FLAGS_model);
  f.negative_prompt = absl::GetFlag(FLAGS_negative_prompt);
  f.height = absl::GetFlag(FLAGS_height);
  f.width = absl::GetFlag(FLAGS_width);
  f.num_inference_steps = absl::GetFlag(FLAGS_num_inference_steps);
  f.guidance_scale = absl::GetFlag(FLAGS_guidance_scale);
  f.true_cfg_scale = absl::GetFlag(FLAGS_true_cfg_scale);
  f.seed = absl::GetFlag(FLAGS_seed);
  f.max_sequence_length = absl::GetFlag(FLAGS_max_sequence_length);
  f.dtype = absl::GetFlag(FLAGS_dtype);
  return f;
}

std::string PromptFlag() { return absl::GetFlag(FLAGS_prompt); }

absl::Status ValidateDtype(const GenerationFlags& flags) {
  if (!flags.dtype.empty() && flags.dtype != "f32" && flags.dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be f32 or bf16, got '", flags.dtype, "'"));
  }
  return absl::OkStatus();
}

std::string ResolvedDtype(const GenerationFlags& flags, bool cuda) {
  if (!flags.dtype.empty()) return flags.dtype;
  return cuda ? "bf16" : "f32";
}

}  // namespace ditserve::core
