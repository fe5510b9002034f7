"""Test reference: a tiny random FluxTransformer2DModel from PyPI's diffusers,
saved as a diffusers directory, with inputs and diffusers' own output.

usage: flux_reference.py OUT_DIR dev|schnell
"""
import sys

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file

out_dir, variant = sys.argv[1], sys.argv[2]
guidance = variant == "dev"
torch.manual_seed(0)
model = FluxTransformer2DModel(
    patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=12,
    guidance_embeds=guidance, axes_dims_rope=(4, 6, 6))
with torch.no_grad():  # diffusers zero-initialises some layers: make every weight count
    for p in model.parameters():
        p.normal_(0.0, 0.1)
model.eval()
model.save_pretrained(out_dir + "/transformer")

B, H, W, T = 2, 3, 4, 5
img_ids = torch.zeros(H, W, 3)
img_ids[..., 1] = torch.arange(H)[:, None]
img_ids[..., 2] = torch.arange(W)[None, :]
inputs = {
    "hidden_states": torch.randn(B, H * W, 16),
    "encoder_hidden_states": torch.randn(B, T, 24),
    "pooled_projections": torch.randn(B, 12),
    "timestep": torch.tensor([0.3, 0.9]),
    "img_ids": img_ids.reshape(H * W, 3),
    "txt_ids": torch.zeros(T, 3),
}
if guidance:
    inputs["guidance"] = torch.tensor([3.5, 1.0])
with torch.no_grad():
    expected = model(**inputs, return_dict=False)[0]
save_file({**inputs, "expected": expected.contiguous()}, out_dir + "/io.safetensors")
