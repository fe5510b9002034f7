#pragma once

// FlowMatchEulerDiscreteScheduler as diffusers' FluxPipeline (FluxSigmas)
// and StableDiffusion3Pipeline (DefaultScheduleSigmas) drive it, and the
// 2x2 latent packing and Flux's position ids.

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace ditserve::worker::flux {

// scheduler/scheduler_config.json.
struct FlowMatchSchedulerConfig {
  int num_train_timesteps = 1000;
  double shift = 1.0;
  bool use_dynamic_shifting = false;
  double base_shift = 0.5;
  double max_shift = 1.15;
  int base_image_seq_len = 256;
  int max_image_seq_len = 4096;
};

// INVALID_ARGUMENT for malformed JSON or options this implementation does
// not provide (karras/exponential/beta sigmas, inverted sigmas, a terminal
// shift, stochastic sampling, a non-exponential time shift).
absl::StatusOr<FlowMatchSchedulerConfig> ParseFlowMatchSchedulerConfig(const std::string& json_text);

// FluxPipeline's calculate_shift: mu, linear in the image token count
// between (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift).
double FluxMu(int64_t image_seq_len, const FlowMatchSchedulerConfig& config);

// The sigmas of a run: linspace(1, 1/steps, steps), shifted (dynamically by
// exp(mu)/(exp(mu) + 1/s - 1), else by shift·s/(1 + (shift-1)·s)), then a
// final 0: steps+1 values, float32 arithmetic as diffusers. The model's
// timestep at step i is sigmas[i] (×1000 inside the transformer).
std::vector<float> FluxSigmas(int num_steps, int64_t image_seq_len, const FlowMatchSchedulerConfig& config);

// The scheduler's own schedule: set_timesteps(num_steps, mu) without
// sigmas, as StableDiffusion3Pipeline calls it. linspace in float64 from
// sigma_max to sigma_min of the training schedule (float32: t/N for t = N
// … 1, statically shifted unless dynamic shifting is on), shifted again
// (dynamically with FluxMu(image_seq_len), else statically) in float64,
// cast to float32, then a final 0: steps+1 values.
std::vector<float> DefaultScheduleSigmas(int num_steps, int64_t image_seq_len, const FlowMatchSchedulerConfig& config);

// One Euler step: sample + (sigma_next - sigma)·velocity, computed in
// float32 and returned in the velocity's dtype.
at::Tensor FlowMatchEulerStep(const at::Tensor& sample, const at::Tensor& velocity, float sigma,
                              float sigma_next);

// [B, C, H, W] latents -> [B, (H/2)(W/2), 4C] tokens (2x2 patches), and back.
at::Tensor PackLatents(const at::Tensor& latents);
at::Tensor UnpackLatents(const at::Tensor& tokens, int64_t latent_height, int64_t latent_width);
// Position ids [(H/2)(W/2), 3] of packed image tokens: (0, row, column).
at::Tensor LatentImageIds(int64_t latent_height, int64_t latent_width);

}  // namespace ditserve::worker::flux
