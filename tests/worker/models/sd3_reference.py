"""Test reference: a tiny random SD3Transformer2DModel from PyPI's diffusers,
saved as a diffusers directory, with inputs and diffusers' own output.

usage: sd3_reference.py OUT_DIR sd3|sd3.5-large|sd3.5-medium
  sd3:          no qk_norm, no dual attention (Stable Diffusion 3)
  sd3.5-large:  qk_norm rms_norm
  sd3.5-medium: qk_norm rms_norm and dual attention in the first blocks,
                out_channels != in_channels
"""
import sys

import torch
from diffusers import SD3Transformer2DModel
from safetensors.torch import save_file

out_dir, variant = sys.argv[1], sys.argv[2]
medium = variant == "sd3.5-medium"
torch.manual_seed(0)
model = SD3Transformer2DModel(
    sample_size=16, patch_size=2, in_channels=4, num_layers=4 if medium else 3, attention_head_dim=8,
    num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16, pooled_projection_dim=12,
    out_channels=6 if medium else 4, pos_embed_max_size=16,
    dual_attention_layers=(0, 1) if medium else (),
    qk_norm=None if variant == "sd3" else "rms_norm")
with torch.no_grad():  # diffusers zero-initialises some layers: make every weight count
    for p in model.parameters():
        p.normal_(0.0, 0.1)
model.eval()
model.save_pretrained(out_dir + "/transformer")

# A non-square 16x24 latent: an 8x12 token grid, smaller than the 16x16
# position-embedding grid (so the centre crop matters).
B, H, W, T = 2, 16, 24, 13
inputs = {
    "hidden_states": torch.randn(B, 4, H, W),
    "encoder_hidden_states": torch.randn(B, T, 24),
    "pooled_projections": torch.randn(B, 12),
    "timestep": torch.tensor([312.5, 871.25]),
}
with torch.no_grad():
    expected = model(**inputs, return_dict=False)[0]
save_file({**inputs, "expected": expected.contiguous()}, out_dir + "/io.safetensors")
