"""Test reference: whole generations of diffusers' StableDiffusion3Pipeline
on directories written by ditserve-make-model --family sd3.

usage: sd3_generation_reference.py OUT.safetensors CASES.json
  CASES.json: [{"name", "model", "prompt", "negative_prompt" (or null),
                "guidance_scale" (or null: the pipeline's default), "height",
                "width", "steps", "seed", "max_sequence_length"}, ...]
Writes {name}.latents (packed as ditserve saves them: [1, h/2 * w/2, 4C],
channel-major 2x2 patches) and {name}.image ([H, W, 3] in [0, 1]).
"""
import json
import sys

import numpy as np
import torch
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import save_file

cases = json.load(open(sys.argv[2]))
pipes = {}
out = {}
for case in cases:
    if case["model"] not in pipes:
        pipes[case["model"]] = StableDiffusion3Pipeline.from_pretrained(case["model"], torch_dtype=torch.float32)
    pipe = pipes[case["model"]]
    kwargs = dict(prompt=case["prompt"], height=case["height"], width=case["width"],
                  num_inference_steps=case["steps"], max_sequence_length=case["max_sequence_length"])
    if case.get("negative_prompt") is not None:
        kwargs["negative_prompt"] = case["negative_prompt"]
    if case.get("guidance_scale") is not None:
        kwargs["guidance_scale"] = case["guidance_scale"]
    for output_type in ("latent", "np"):
        images = pipe(generator=torch.Generator().manual_seed(case["seed"]), output_type=output_type, **kwargs).images
        if output_type == "latent":
            b, c, h, w = images.shape
            packed = images.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, c * 4)
            out[case["name"] + ".latents"] = packed.float().contiguous()
        else:
            out[case["name"] + ".image"] = torch.from_numpy(np.ascontiguousarray(images[0])).float()
save_file(out, sys.argv[1])
