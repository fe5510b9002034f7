"""Test reference: tiny random PixArtTransformer2DModels from PyPI's
diffusers, saved as diffusers directories, with inputs and diffusers' own
output.

usage: pixart_reference.py OUT_DIR sigma|alpha
  sigma: sample_size 16 (no micro-conditions, interpolation scale 1)
  alpha: sample_size 128 (the micro-conditions: resolution and aspect
         ratio; interpolation scale 2)
"""
import sys

import torch
from diffusers import PixArtTransformer2DModel
from safetensors.torch import save_file

out_dir, variant = sys.argv[1], sys.argv[2]
alpha = variant == "alpha"
torch.manual_seed(0)
model = PixArtTransformer2DModel(
    num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8, num_layers=3,
    cross_attention_dim=24, sample_size=128 if alpha else 16, caption_channels=20)
with torch.no_grad():  # diffusers zero-initialises some layers: make every weight count
    for p in model.parameters():
        p.normal_(0.0, 0.1)
model.eval()
model.save_pretrained(out_dir + "/transformer")

# A non-square 12x20 latent (6x10 tokens), two prompts with different
# padding (the second's last four tokens are padding).
B, H, W, T = 2, 12, 20, 9
mask = torch.ones(B, T)
mask[1, 5:] = 0
inputs = {
    "hidden_states": torch.randn(B, 4, H, W),
    "encoder_hidden_states": torch.randn(B, T, 20),
    "encoder_attention_mask": mask,
    "timestep": torch.tensor([999.0, 421.0]),
}
kwargs = dict(inputs)
if alpha:
    kwargs["added_cond_kwargs"] = {"resolution": torch.tensor([[96.0, 160.0]]).repeat(B, 1),
                                   "aspect_ratio": torch.tensor([[96.0 / 160.0]]).repeat(B, 1)}
with torch.no_grad():
    expected = model(**kwargs, return_dict=False)[0]
save_file({**inputs, "expected": expected.contiguous()}, out_dir + "/io.safetensors")
