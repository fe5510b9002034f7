"""Test reference: tiny random HunyuanDiT2DModels from PyPI's diffusers,
saved as diffusers directories, with inputs, the pipeline's RoPE and
diffusers' own output.

usage: hunyuandit_reference.py OUT_DIR v12|v11
  v12: HunyuanDiT v1.2's layout (no style or image-meta-size condition)
  v11: v1.1's (style 0 and the meta size [1024, 1024, h, w, 0, 0])
"""
import sys

import torch
from diffusers import HunyuanDiT2DModel
from diffusers.models.embeddings import get_2d_rotary_pos_embed
from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import get_resize_crop_region_for_grid
from safetensors.torch import save_file

out_dir, variant = sys.argv[1], sys.argv[2]
v11 = variant == "v11"
torch.manual_seed(0)
# Six layers: blocks 4 and 5 take the skips of blocks 1 and 0.
model = HunyuanDiT2DModel(
    num_attention_heads=2, attention_head_dim=12, in_channels=4, patch_size=2, sample_size=16, hidden_size=24,
    num_layers=6, mlp_ratio=4.3637, learn_sigma=True, cross_attention_dim=20, cross_attention_dim_t5=32,
    pooled_projection_dim=16, text_len=5, text_len_t5=7, use_style_cond_and_image_meta_size=v11)
with torch.no_grad():  # make every weight count
    for p in model.parameters():
        p.normal_(0.0, 0.15)
model.eval()
model.save_pretrained(out_dir + "/transformer")

# A non-square 12x20 latent (6x10 tokens), two prompts with different
# padding in both text streams.
B, H, W = 2, 12, 20
mask = torch.ones(B, 5)
mask[1, 3:] = 0
mask_t5 = torch.ones(B, 7)
mask_t5[0, 6:] = 0
mask_t5[1, 2:] = 0
grid = (H // 2, W // 2)
cos, sin = get_2d_rotary_pos_embed(12, get_resize_crop_region_for_grid(grid, 32), grid, output_type="pt")
inputs = {
    "hidden_states": torch.randn(B, 4, H, W),
    "timestep": torch.tensor([999.0, 421.0]),
    "encoder_hidden_states": torch.randn(B, 5, 20),
    "text_embedding_mask": mask,
    "encoder_hidden_states_t5": torch.randn(B, 7, 32),
    "text_embedding_mask_t5": mask_t5,
}
kwargs = dict(inputs)
kwargs["image_rotary_emb"] = (cos, sin)
kwargs["image_meta_size"] = torch.tensor([[1024.0, 1024.0, 8.0 * H, 8.0 * W, 0.0, 0.0]]).repeat(B, 1)
kwargs["style"] = torch.zeros(B, dtype=torch.long)
with torch.no_grad():
    expected = model(**kwargs, return_dict=False)[0]
# Square and tall grids for the RoPE crop rule too.
extra = {}
for rows, cols in [(6, 10), (8, 8), (10, 6), (7, 3), (64, 64), (48, 80)]:
    c, s = get_2d_rotary_pos_embed(12, get_resize_crop_region_for_grid((rows, cols), 32), (rows, cols), output_type="pt")
    extra[f"rope_cos_{rows}x{cols}"] = c.contiguous()
    extra[f"rope_sin_{rows}x{cols}"] = s.contiguous()
save_file({**inputs, **extra, "expected": expected.contiguous()}, out_dir + "/io.safetensors")
