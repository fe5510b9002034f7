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
ABSL_FLAG(bool, use_fbcache, false,
          "First-Block-Cache: skip the blocks after the first on steps whose first-block residual barely changed "
          "(docs/step-caching.md)");
ABSL_FLAG(bool, use_teacache, false,
          "TeaCache: skip the blocks on steps whose accumulated, rescaled change of the first block's modulated input "
          "is under the threshold (docs/step-caching.md)");
ABSL_FLAG(double, cache_threshold, -1,
          "Threshold of --use_fbcache (default 0.12, at most 1) or --use_teacache (default 0.4, at most 2); "
          "0 computes every step. Negative: the method's default");
ABSL_FLAG(std::string, model_root, "",
          "Only serve models under this directory: --model, and every file and symlink in it, must resolve inside "
          "it (PERMISSION_DENIED otherwise); empty: no confinement");
ABSL_FLAG(bool, use_parallel_vae, false,
          "Every rank of the gang decodes a band of the image's rows, exchanging halo rows, group-norm sums and "
          "attention tokens (xDiT): equal to the one-rank decode, the largest activation ~1/ranks (one rank: one band)");
ABSL_FLAG(bool, vae_tiling, false,
          "Decode in overlapping tiles blended together, as diffusers' enable_tiling (an approximation; the largest "
          "activation is a tile's, whatever the image size)");
ABSL_FLAG(int, vae_tile_size, 0,
          "Tile size in pixels with --vae_tiling, a multiple of 4 latent rows (32 px for 8x VAEs); 0: the VAE's "
          "sample_size");
ABSL_FLAG(int64_t, vae_memory_cap_mb, 0,
          "Largest activation (MiB) the VAE decode may hold on a rank: a size whose decode would exceed it is "
          "rejected before any step runs (INVALID_ARGUMENT); 0: no cap");

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
  f.use_fbcache = absl::GetFlag(FLAGS_use_fbcache);
  f.use_teacache = absl::GetFlag(FLAGS_use_teacache);
  f.cache_threshold = absl::GetFlag(FLAGS_cache_threshold);
  f.model_root = absl::GetFlag(FLAGS_model_root);
  f.vae.parallel = absl::GetFlag(FLAGS_use_parallel_vae);
  f.vae.tiling = absl::GetFlag(FLAGS_vae_tiling);
  f.vae.tile_size = absl::GetFlag(FLAGS_vae_tile_size);
  f.vae.memory_cap_mb = absl::GetFlag(FLAGS_vae_memory_cap_mb);
  return f;
}

std::string PromptFlag() { return absl::GetFlag(FLAGS_prompt); }

absl::Status ValidateDtype(const GenerationFlags& flags) {
  if (!flags.dtype.empty() && flags.dtype != "f32" && flags.dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be f32 or bf16, got '", flags.dtype, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<StepCacheOptions> StepCacheFromFlags(const GenerationFlags& flags) {
  if (flags.use_fbcache && flags.use_teacache) {
    return absl::InvalidArgumentError("--use_fbcache and --use_teacache exclude each other: pick one");
  }
  StepCacheOptions o;
  o.method = flags.use_fbcache    ? StepCacheMethod::kFirstBlock
             : flags.use_teacache ? StepCacheMethod::kTeaCache
                                  : StepCacheMethod::kNone;
  if (o.method == StepCacheMethod::kNone) {
    if (flags.cache_threshold >= 0) {
      return absl::InvalidArgumentError("--cache_threshold needs --use_fbcache or --use_teacache");
    }
    return o;
  }
  o.threshold = flags.cache_threshold < 0 ? DefaultStepCacheThreshold(o.method) : flags.cache_threshold;
  if (absl::Status s = ValidateStepCache(o, MaxStepCacheThreshold(o.method), "--cache_threshold"); !s.ok()) return s;
  return o;
}

std::string ResolvedDtype(const GenerationFlags& flags, bool cuda) {
  if (!flags.dtype.empty()) return flags.dtype;
  return cuda ? "bf16" : "f32";
}

}  // namespace ditserve::core
