"""Test reference: diffusers' DPMSolverMultistepScheduler, EulerDiscreteScheduler
and DDIMScheduler on several configs: timesteps, init_noise_sigma, and a
whole sampling loop on seeded random samples and model outputs (the
scaled model inputs and every step's sample).

usage: discrete_scheduler_reference.py OUT   (writes OUT.safetensors, OUT.json)
"""
import json
import sys

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from safetensors.torch import save_file

CASES = [
    # (name, class, config overrides, steps)
    ("pixart1", DPMSolverMultistepScheduler, {}, 1),
    ("pixart2", DPMSolverMultistepScheduler, {}, 2),
    ("pixart5", DPMSolverMultistepScheduler, {}, 5),
    ("pixart20", DPMSolverMultistepScheduler, {}, 20),
    ("dpm_heun_sigma_min", DPMSolverMultistepScheduler,
     {"solver_type": "heun", "final_sigmas_type": "sigma_min", "lower_order_final": False}, 10),
    ("dpm_leading_v", DPMSolverMultistepScheduler,
     {"timestep_spacing": "leading", "steps_offset": 1, "beta_schedule": "scaled_linear",
      "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "v_prediction"}, 8),
    ("dpm_trailing_order1_sample", DPMSolverMultistepScheduler,
     {"timestep_spacing": "trailing", "solver_order": 1, "prediction_type": "sample"}, 7),
    ("dpm_cosine_clipped", DPMSolverMultistepScheduler,
     {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}, 12),
    ("dpm_long", DPMSolverMultistepScheduler, {"euler_at_final": True}, 30),
    ("euler_linspace", EulerDiscreteScheduler, {}, 10),
    ("euler_leading", EulerDiscreteScheduler,
     {"timestep_spacing": "leading", "steps_offset": 1, "beta_schedule": "scaled_linear",
      "beta_start": 0.00085, "beta_end": 0.012}, 6),
    ("euler_trailing_v", EulerDiscreteScheduler, {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 5),
    ("euler_sample", EulerDiscreteScheduler, {"prediction_type": "sample"}, 4),
    ("ddim_leading", DDIMScheduler, {"steps_offset": 1}, 10),
    ("ddim_trailing", DDIMScheduler,
     {"timestep_spacing": "trailing", "clip_sample": False, "set_alpha_to_one": False}, 6),
    ("ddim_linspace_v", DDIMScheduler, {"timestep_spacing": "linspace", "prediction_type": "v_prediction"}, 5),
    ("ddim_sample", DDIMScheduler, {"prediction_type": "sample", "clip_sample_range": 0.5}, 4),
    # DDPM draws fresh noise each step with t > 0 from the step's generator
    # (seeded per case: NOISE_SEED + case index), after nothing else.
    ("ddpm_leading", DDPMScheduler, {"steps_offset": 1}, 10),
    ("ddpm_v_trailing", DDPMScheduler,
     {"prediction_type": "v_prediction", "timestep_spacing": "trailing", "beta_schedule": "scaled_linear",
      "beta_start": 0.00085, "beta_end": 0.03, "clip_sample": False}, 6),
    ("ddpm_linspace_large", DDPMScheduler, {"timestep_spacing": "linspace", "variance_type": "fixed_large"}, 5),
    ("ddpm_small_log_sample", DDPMScheduler,
     {"variance_type": "fixed_small_log", "prediction_type": "sample", "clip_sample_range": 0.7}, 4),
    # HunyuanDiT's checkpoint configuration (ditserve-make-model --family hunyuandit).
    ("ddpm_hunyuandit", DDPMScheduler,
     {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.03, "clip_sample": False,
      "prediction_type": "v_prediction", "steps_offset": 1, "timestep_spacing": "leading",
      "variance_type": "fixed_small"}, 8),
]
NOISE_SEED = 1000

out = {}
configs = {}
g = torch.Generator().manual_seed(0)
for index, (name, cls, overrides, steps) in enumerate(CASES):
    s = cls(**overrides)
    configs[name] = {"config": json.dumps(dict(s.config, _class_name=cls.__name__)), "steps": steps, "index": index}
    s.set_timesteps(steps)
    out[f"{name}.timesteps"] = s.timesteps.to(torch.float64).clone()
    out[f"{name}.init_noise_sigma"] = torch.tensor([float(s.init_noise_sigma)], dtype=torch.float64)
    x = torch.randn(2, 6, 4, generator=g) * float(s.init_noise_sigma)
    noise = torch.Generator().manual_seed(NOISE_SEED + index)
    out[f"{name}.x0"] = x.clone()
    for i, t in enumerate(s.timesteps):
        o = torch.randn(2, 6, 4, generator=g)
        out[f"{name}.out{i}"] = o
        out[f"{name}.in{i}"] = s.scale_model_input(x, t).clone()
        if cls is DDPMScheduler:
            x = s.step(o, t, x, generator=noise).prev_sample
        else:
            x = s.step(o, t, x).prev_sample
        out[f"{name}.x{i + 1}"] = x.clone()
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1] + ".safetensors")
with open(sys.argv[1] + ".json", "w") as f:
    json.dump(configs, f, allow_nan=True)
