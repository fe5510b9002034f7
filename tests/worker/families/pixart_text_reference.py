"""Test reference: PixArtSigmaPipeline.encode_prompt (clean_caption=False)
on a directory written by ditserve-make-model --family pixart-sigma.

usage: pixart_text_reference.py MODEL_DIR OUT.safetensors PROMPTS.json
  PROMPTS.json: [[prompt, max_sequence_length], ...]
Writes embeds.{i} [1, L, d_model] and mask.{i} [1, L] (float).
"""
import json
import sys

import torch
from diffusers import PixArtSigmaPipeline
from safetensors.torch import save_file

pipe = PixArtSigmaPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
out = {}
for i, (prompt, length) in enumerate(json.load(open(sys.argv[3]))):
    embeds, mask, _, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=length,
                                            clean_caption=False, device="cpu")
    out[f"embeds.{i}"] = embeds.float().contiguous()
    out[f"mask.{i}"] = mask.float().contiguous()
save_file(out, sys.argv[2])
