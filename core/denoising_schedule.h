#pragma once

// The denoising schedule of a request, torch-free: for every step, the
// time value the transformer is conditioned on, the scale of its input and
// the scheduler's update, as diffusers' scheduler classes compute them.
//
// Every scheduler served is linear in the sample x_i, the model output o_i
// (after guidance) and the solver's history of data predictions (DPM-
// Solver's multistep), so one form covers all of them and the engine
// applies it token range by token range (a PipeFusion patch, an SP shard):
//
//   m_i     = clip(history_sample · x_i + history_output · o_i)
//   x_{i+1} = sample · x_i + output · o_i + Σ_j history[j] · m_{i−j} + noise · z_i
//
// where clip is the identity unless clip_range > 0 (DDIM's and DDPM's
// clip_sample) and z_i is a fresh standard normal draw of the request's
// generator (DDPM's variance; noise is 0 for the deterministic solvers).
// Coefficients of exactly 0 and 1 are skipped by the engine, so the flow-
// matching Euler step (x + dσ·v) runs bit for bit as before.
//
// Supported _class_name values of scheduler/scheduler_config.json:
// FlowMatchEulerDiscreteScheduler (from the sigmas the family computes:
// FlowMatchSchedule), DPMSolverMultistepScheduler (dpmsolver++, orders 1
// and 2, midpoint or heun, its final-step and spacing options),
// EulerDiscreteScheduler (s_churn 0), DDIMScheduler (eta 0) and
// DDPMScheduler (fixed variances: fixed_small, fixed_small_log, fixed_large). Options
// that are not linear (thresholding, SDE variants, ancestral noise) or not
// written (Karras/exponential/beta sigmas, third order) are INVALID_ARGUMENT
// naming the field, never a silent approximation.

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ditserve::core {

struct StepUpdate {
  double sample = 1.0;
  double output = 0.0;
  double history_sample = 0.0;
  double history_output = 0.0;
  double clip_range = 0.0;      // > 0: m_i is clamped to ±clip_range
  double noise = 0.0;           // the standard deviation of the step's fresh noise (DDPM)
  std::vector<double> history;  // history[j] multiplies m_{i−j}; empty: m_i is not formed
};

struct DenoisingSchedule {
  std::string scheduler;             // the _class_name
  std::vector<double> model_times;   // per step: what the transformer's time embedding takes
  std::vector<double> input_scales;  // per step: the model input is input_scale · x_i
  double init_noise_sigma = 1.0;     // the initial latents are init_noise_sigma · N(0, 1)
  std::vector<StepUpdate> updates;   // per step
  int steps() const { return static_cast<int>(updates.size()); }
  // The most data predictions an update reads (the history kept).
  int history_depth() const;
  // True when some update draws noise (the run needs the requests'
  // generators after their initial latents).
  bool stochastic() const;
};

// The discrete-time (DDPM-trained) schedulers' config, as diffusers reads
// it; fields a class does not have keep their defaults.
struct DiscreteSchedulerConfig {
  std::string class_name;
  int num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";  // linear | scaled_linear | squaredcos_cap_v2
  std::string prediction_type = "epsilon";  // epsilon | v_prediction | sample
  std::string timestep_spacing = "linspace";  // linspace | leading | trailing
  int steps_offset = 0;
  // DPMSolverMultistepScheduler
  int solver_order = 2;
  std::string algorithm_type = "dpmsolver++";
  std::string solver_type = "midpoint";
  bool lower_order_final = true;
  bool euler_at_final = false;
  std::string final_sigmas_type = "zero";  // zero | sigma_min
  double lambda_min_clipped = -1.0 / 0.0;
  // EulerDiscreteScheduler
  std::string interpolation_type = "linear";
  // DDIMScheduler and DDPMScheduler
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;  // DDIM only
  // DDPMScheduler
  std::string variance_type = "fixed_small";  // fixed_small | fixed_small_log | fixed_large
};

// The classes this module computes ("DPMSolverMultistepScheduler", …).
const std::vector<std::string>& SupportedDiscreteSchedulers();

// Parses scheduler_config.json's text. INVALID_ARGUMENT naming the field
// (or the class and the supported ones) for what is not supported.
absl::StatusOr<DiscreteSchedulerConfig> ParseDiscreteSchedulerConfig(const std::string& json_text);

// The schedule of `steps` (>= 1) steps. INVALID_ARGUMENT when the config
// cannot make one (e.g. more steps than leading spacing can place).
absl::StatusOr<DenoisingSchedule> MakeDiscreteSchedule(const DiscreteSchedulerConfig& config, int steps);

// The flow-matching Euler schedule of steps + 1 sigmas (the last 0): the
// model time of step i is sigma_i; x_{i+1} = x_i + (sigma_{i+1} − sigma_i)·o_i
// with the difference taken in float32, as diffusers does.
DenoisingSchedule FlowMatchSchedule(const std::vector<float>& sigmas);

// alphas_cumprod of the training schedule in float32, as diffusers' schedulers
// compute it (betas from torch.linspace in float32, cumprod accumulated in
// double and rounded per element).
std::vector<float> AlphasCumprod(const DiscreteSchedulerConfig& config);

}  // namespace ditserve::core
