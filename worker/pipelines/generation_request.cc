#include "worker/pipelines/generation_request.h"

namespace ditserve::worker::pipelines {

GenerationRequest MakeGenerationRequest(const core::GenerationFlags& flags, const std::string& prompt, uint64_t seed,
                                        int default_size) {
  GenerationRequest r;
  r.prompt = prompt;
  r.negative_prompt = flags.negative_prompt;
  r.height = flags.height == 0 ? default_size : flags.height;
  r.width = flags.width == 0 ? default_size : flags.width;
  r.num_inference_steps = flags.num_inference_steps;
  r.guidance_scale = flags.guidance_scale;
  r.true_cfg_scale = flags.true_cfg_scale;
  r.seed = seed;
  r.max_sequence_length = flags.max_sequence_length;
  // Checked by the launchers (StepCacheFromFlags); an invalid choice here
  // runs uncached and the pipeline's Validate cannot see it, so callers
  // validate first.
  r.cache = core::StepCacheFromFlags(flags).value_or(core::StepCacheOptions{});
  return r;
}

}  // namespace ditserve::worker::pipelines
