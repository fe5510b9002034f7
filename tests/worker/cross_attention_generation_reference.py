"""Test reference: whole generations of diffusers' PixArtSigmaPipeline /
PixArtAlphaPipeline / HunyuanDiTPipeline on directories written by
ditserve-make-model --family pixart-sigma|pixart-alpha|hunyuandit
(PixArt: clean_caption=False, resolution binning where diffusers has a
table for the transformer's sample_size; HunyuanDiT: no binning, its
pipeline's fixed text lengths).

usage: cross_attention_generation_reference.py OUT.safetensors CASES.json
  CASES.json: [{"name", "model", "prompt", "negative_prompt" (or null),
                "guidance_scale" (or null: the pipeline's default 4.5),
                "height", "width", "steps", "seed", "max_sequence_length",
                "scheduler" (or null: the directory's)}, ...]
Writes {name}.latents (packed as ditserve saves them: [1, h/2 * w/2, 4C],
channel-major 2x2 patches) and {name}.image ([H, W, 3] in [0, 1]).
"""
import json
import sys

import numpy as np
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       HunyuanDiTPipeline, PixArtAlphaPipeline, PixArtSigmaPipeline)
from safetensors.torch import save_file

PIPELINES = {"PixArtSigmaPipeline": PixArtSigmaPipeline, "PixArtAlphaPipeline": PixArtAlphaPipeline,
             "HunyuanDiTPipeline": HunyuanDiTPipeline}
SCHEDULERS = {"DDIMScheduler": DDIMScheduler, "DDPMScheduler": DDPMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler,
              "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler}

cases = json.load(open(sys.argv[2]))
pipes = {}
out = {}
for case in cases:
    if case["model"] not in pipes:
        index = json.load(open(case["model"] + "/model_index.json"))
        pipes[case["model"]] = PIPELINES[index["_class_name"]].from_pretrained(case["model"], torch_dtype=torch.float32)
    pipe = pipes[case["model"]]
    # The directory's scheduler class (a test may rewrite scheduler_config.json).
    wanted = json.load(open(case["model"] + "/scheduler/scheduler_config.json"))["_class_name"]
    if type(pipe.scheduler).__name__ != wanted:
        pipe.scheduler = SCHEDULERS[wanted].from_pretrained(case["model"] + "/scheduler")
    kwargs = dict(prompt=case["prompt"], height=case["height"], width=case["width"],
                  num_inference_steps=case["steps"])
    if isinstance(pipe, HunyuanDiTPipeline):
        # ditserve generates at the requested size (no binning).
        kwargs["use_resolution_binning"] = False
    else:
        kwargs.update(max_sequence_length=case["max_sequence_length"], clean_caption=False,
                      # diffusers bins for the sample sizes it has tables for
                      # (and raises for others); ditserve bins exactly then.
                      use_resolution_binning=pipe.transformer.config.sample_size in (32, 64, 128, 256))
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
            out[case["name"] + ".latent_size"] = torch.tensor([h, w])
        else:
            out[case["name"] + ".image"] = torch.from_numpy(np.ascontiguousarray(images[0])).float()
save_file(out, sys.argv[1])
