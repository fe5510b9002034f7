"""Test reference: diffusers' StableDiffusion3Pipeline.encode_prompt on a
directory written by ditserve-make-model --family sd3 (with T5, or without
it when model_index.json's text_encoder_3 is null), for each prompt and
max_sequence_length.

usage: sd3_text_encoder_reference.py MODEL_DIR OUT.safetensors N... < prompts.json
  (tensors embeds_{i}_{n} [1, 77 + n, D] and pooled_{i}_{n}; flag has_t5)
"""
import json
import sys

import torch
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import save_file

prompts = json.load(sys.stdin)
with open(sys.argv[1] + "/model_index.json") as f:
    index = json.load(f)
# diffusers loads a directory without T5 only when told so: text_encoder_3
# is not an optional component of the pipeline.
absent = {name: None for name in ("text_encoder_3", "tokenizer_3") if index.get(name, [None])[0] is None}
pipe = StableDiffusion3Pipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float32, **absent)
out = {"has_t5": torch.tensor([pipe.text_encoder_3 is not None])}
with torch.no_grad():
    for n in (int(a) for a in sys.argv[3:]):
        for i, prompt in enumerate(prompts):
            embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_3=None, device="cpu",
                                                      do_classifier_free_guidance=False, max_sequence_length=n)
            out[f"embeds_{i}_{n}"] = embeds.contiguous()
            out[f"pooled_{i}_{n}"] = pooled.contiguous()
save_file(out, sys.argv[2])
