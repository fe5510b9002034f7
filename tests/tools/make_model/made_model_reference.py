"""Test reference: loads a directory written by ditserve-make-model with PyPI's
diffusers (proving it is a real diffusers FluxPipeline directory) and
generates with it.

usage: made_model_reference.py MODEL_DIR OUT.safetensors
"""
import sys

import numpy as np
import torch
from diffusers import FluxPipeline
from safetensors.torch import save_file

pipe = FluxPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
out = pipe("a red circle on a blue background", height=64, width=96, num_inference_steps=3, guidance_scale=3.5,
           max_sequence_length=32, generator=torch.Generator().manual_seed(5), output_type="np").images
save_file({"image": torch.from_numpy(np.ascontiguousarray(out[0])).float()}, sys.argv[2])
