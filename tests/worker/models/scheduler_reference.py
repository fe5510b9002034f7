"""Test reference: sigmas of diffusers' FlowMatchEulerDiscreteScheduler as
FluxPipeline and StableDiffusion3Pipeline set them, Flux latent packing,
and one Euler step.

usage: scheduler_reference.py OUT.safetensors
"""
import sys

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from safetensors.torch import save_file

out = {}
dev = dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
           num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
schnell = dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
               num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
static3 = dict(schnell, shift=3.0)
for name, cfg in [("dev", dev), ("schnell", schnell), ("static3", static3)]:
    for steps in (1, 4, 28):
        for seq in (64, 1024, 4096, 9000):
            s = FlowMatchEulerDiscreteScheduler(**cfg)
            sig = np.linspace(1.0, 1 / steps, steps)
            mu = calculate_shift(seq, cfg["base_image_seq_len"], cfg["max_image_seq_len"],
                                 cfg["base_shift"], cfg["max_shift"])
            s.set_timesteps(sigmas=sig, mu=mu)
            out[f"sigmas.{name}.{steps}.{seq}"] = s.sigmas.clone()
# StableDiffusion3Pipeline: the scheduler's own schedule (no sigmas); mu
# only with dynamic shifting.
for name, cfg in [("dev", dev), ("schnell", schnell), ("static3", static3)]:
    for steps in (1, 2, 4, 28, 50):
        for seq in (64, 1024, 4096):
            s = FlowMatchEulerDiscreteScheduler(**cfg)
            mu = calculate_shift(seq, cfg["base_image_seq_len"], cfg["max_image_seq_len"],
                                 cfg["base_shift"], cfg["max_shift"])
            s.set_timesteps(steps, mu=mu if cfg["use_dynamic_shifting"] else None)
            out[f"default.{name}.{steps}.{seq}"] = s.sigmas.clone()
            out[f"default_timesteps.{name}.{steps}.{seq}"] = s.timesteps.clone()
torch.manual_seed(0)
lat = torch.randn(2, 4, 6, 8)
packed = FluxPipeline._pack_latents(lat, 2, 4, 6, 8)
out["latents"] = lat
out["packed"] = packed
out["unpacked"] = FluxPipeline._unpack_latents(packed, 48, 64, 8)
out["ids"] = FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu", torch.float32)
s = FlowMatchEulerDiscreteScheduler(**dev)
s.set_timesteps(sigmas=np.linspace(1.0, 0.25, 4), mu=0.8)
v = torch.randn(2, 12, 16)
x = torch.randn(2, 12, 16)
out["step.x"], out["step.v"] = x, v
out["step.sigmas"] = s.sigmas.clone()
out["step.out"] = s.step(v, s.timesteps[0], x, return_dict=False)[0]
save_file({k: t.contiguous() for k, t in out.items()}, sys.argv[1])
