"""Test reference: a tiny random AutoencoderKL from PyPI's diffusers, saved as a
diffusers vae/ directory, with latents and diffusers' decoded image.

The latents are also decoded tiled (enable_tiling) with tiles of 16 and
32 pixels. The image, and the mean and log-variance diffusers' encoder gives for it,
check the encoder.

usage: vae_reference.py OUT_DIR post_quant|no_post_quant|no_attention
"""
import sys

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

out_dir, variant = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
vae = AutoencoderKL(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1, norm_num_groups=4, scaling_factor=0.3611, shift_factor=0.1159,
    use_post_quant_conv=variant == "post_quant", use_quant_conv=variant == "post_quant",
    mid_block_add_attention=variant != "no_attention")
with torch.no_grad():
    for p in vae.parameters():
        p.add_(torch.randn_like(p) * 0.05)
vae.eval()
vae.save_pretrained(out_dir + "/vae")
z = torch.randn(2, 4, 6, 5)
with torch.no_grad():
    image = vae.decode(z, return_dict=False)[0]
    tiled_z = torch.randn(1, 4, 11, 9)
    vae.enable_tiling()
    tiled = {}
    for tile in (16, 32):
        vae.tile_sample_min_size = tile
        vae.tile_latent_min_size = tile // 4
        tiled[f"expected_tiled_{tile}"] = vae.decode(tiled_z, return_dict=False)[0].contiguous()
    vae.disable_tiling()
    tiled["expected_untiled"] = vae.decode(tiled_z, return_dict=False)[0].contiguous()
    rgb = torch.rand(2, 3, 24, 20) * 2 - 1
    dist = vae.encode(rgb).latent_dist
# Gradients of a training loss (reconstruction of the latent mean + KL).
d = vae.encode(rgb).latent_dist
loss = ((vae.decode(d.mean).sample - rgb) ** 2).mean() + 0.1 * d.kl().mean()
loss.backward()
grads = {"grad." + k: v.grad.contiguous() for k, v in vae.named_parameters() if v.grad is not None}
save_file({"latents": z, "expected": image.contiguous(), "rgb": rgb,
           "expected_mean": dist.mean.contiguous(), "expected_logvar": dist.logvar.contiguous(),
           "loss": loss.detach().reshape(1), "tiled_latents": tiled_z, **tiled, **grads},
          out_dir + "/io.safetensors")
