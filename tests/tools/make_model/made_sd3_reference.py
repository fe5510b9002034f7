"""Test reference: loads directories written by ditserve-make-model --family
sd3 with PyPI's diffusers and transformers (proving each is a real
StableDiffusion3Pipeline directory: every component loads with no missing,
unexpected or mismatched weight), checks the tokenizers' special tokens and
draws one small image with each.

usage: made_sd3_reference.py OUT.json MODEL_DIR...
"""
import json
import sys

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextModelWithProjection, T5EncoderModel

report = {}
for model_dir in sys.argv[2:]:
    problems = []
    for cls, sub in ((SD3Transformer2DModel, "transformer"), (AutoencoderKL, "vae")):
        _, info = cls.from_pretrained(model_dir, subfolder=sub, output_loading_info=True)
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            if info.get(kind):
                problems.append(f"{sub}: {kind} {list(info[kind])[:5]}")
    for cls, sub in ((CLIPTextModelWithProjection, "text_encoder"), (CLIPTextModelWithProjection, "text_encoder_2"),
                     (T5EncoderModel, "text_encoder_3")):
        _, info = cls.from_pretrained(model_dir + "/" + sub, output_loading_info=True)
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            if info.get(kind):
                problems.append(f"{sub}: {kind} {list(info[kind])[:5]}")
    pipe = StableDiffusion3Pipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    image = pipe("a red circle on a blue background", num_inference_steps=2, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(1), output_type="np").images[0]
    report[model_dir] = {
        "problems": problems,
        "classes": {name: type(getattr(pipe, name)).__name__ for name in (
            "scheduler", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
            "tokenizer_3", "transformer", "vae")},
        "pad_ids": [pipe.tokenizer.pad_token_id, pipe.tokenizer_2.pad_token_id, pipe.tokenizer_3.pad_token_id],
        "pad_tokens": [pipe.tokenizer.pad_token, pipe.tokenizer_2.pad_token, pipe.tokenizer_3.pad_token],
        "shift": pipe.scheduler.config.shift,
        "vae": [pipe.vae.config.latent_channels, pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor],
        "qk_norm": pipe.transformer.config.qk_norm,
        "dual_attention_layers": list(pipe.transformer.config.dual_attention_layers),
        "image_shape": list(image.shape),
        "image_finite": bool(torch.isfinite(torch.from_numpy(image)).all()),
    }
with open(sys.argv[1], "w") as f:
    json.dump(report, f, indent=1)
