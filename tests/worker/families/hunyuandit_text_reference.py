"""Test reference: HunyuanDiTPipeline.encode_prompt, for both text encoders
(index 0: the BERT "CLIP", 77 tokens; index 1: mT5, 256), on a directory
written by ditserve-make-model --family hunyuandit.

usage: hunyuandit_text_reference.py MODEL_DIR OUT.safetensors PROMPTS.json
  PROMPTS.json: [prompt, ...]
Writes bert.{i} [1, 77, w], bert_mask.{i}, t5.{i} [1, 256, w2], t5_mask.{i}
(masks as float).
"""
import json
import sys

import torch
from diffusers import HunyuanDiTPipeline
from safetensors.torch import save_file

pipe = HunyuanDiTPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
out = {}
for i, prompt in enumerate(json.load(open(sys.argv[3]))):
    for name, index, length in (("bert", 0, 77), ("t5", 1, 256)):
        embeds, _, mask, _ = pipe.encode_prompt(prompt, device="cpu", dtype=torch.float32,
                                                do_classifier_free_guidance=False, max_sequence_length=length,
                                                text_encoder_index=index)
        out[f"{name}.{i}"] = embeds.float().contiguous()
        out[f"{name}_mask.{i}"] = mask.float().contiguous()
save_file(out, sys.argv[2])
