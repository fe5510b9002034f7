"""Benchmark helper: ditserve against diffusers on the same Flux checkpoint.

usage:
  flux_vs_diffusers.py widen MODEL_DIR HEADS HEAD_DIM LAYERS SINGLE_LAYERS
      Replaces MODEL_DIR/transformer with a randomly initialised (seed 0)
      FluxTransformer2DModel of that width and depth, stored in bf16; the text
      encoders, VAE and scheduler stay (the transformer keeps their widths).
  flux_vs_diffusers.py run MODEL_DIR DEVICE HEIGHT WIDTH STEPS SEQ PROMPT SEED OUT_PNG
      diffusers' FluxPipeline in bf16 (f32 if DTYPE=f32) on DEVICE; prints one line per step
      ("step i/N  T s", the time from the previous step's end, the device
      synchronised) like ditserve-generate, and writes the image.
  flux_vs_diffusers.py compare A_PNG B_PNG
      Prints the largest per-channel difference and the PSNR of A against B.
  flux_vs_diffusers.py sdpa DEVICE SEQ HEADS HEAD_DIM
      Times LibTorch's attention kernels at [1, HEADS, SEQ, HEAD_DIM] bf16
      (median of 20 calls each).
"""
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
from PIL import Image


def widen(model_dir, heads, head_dim, layers, single_layers):
    from diffusers import FluxTransformer2DModel
    cfg = json.load(open(os.path.join(model_dir, "transformer", "config.json")))
    # RoPE axes sum to the head size; FLUX.1 splits 128 as 16/56/56.
    first = head_dim // 8
    rest = (head_dim - first) // 2
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = FluxTransformer2DModel(
            patch_size=1, in_channels=cfg["in_channels"], num_layers=layers, num_single_layers=single_layers,
            attention_head_dim=head_dim, num_attention_heads=heads,
            joint_attention_dim=cfg["joint_attention_dim"], pooled_projection_dim=cfg["pooled_projection_dim"],
            guidance_embeds=cfg["guidance_embeds"], axes_dims_rope=(first, rest, head_dim - first - rest))
    model = model.to(torch.bfloat16)
    shutil.rmtree(os.path.join(model_dir, "transformer"))
    model.save_pretrained(os.path.join(model_dir, "transformer"), safe_serialization=True,
                          max_shard_size="100GB")
    params = sum(p.numel() for p in model.parameters())
    print(f"transformer: {heads} heads x {head_dim}, {layers} double + {single_layers} single blocks, "
          f"{params / 1e9:.2f} B parameters")


def run(model_dir, device, height, width, steps, seq, prompt, seed, out_png):
    from diffusers import FluxPipeline
    dtype = torch.float32 if os.environ.get("DTYPE") == "f32" else torch.bfloat16
    pipe = FluxPipeline.from_pretrained(model_dir, torch_dtype=dtype).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    last = [0.0]

    def on_step(pipeline, i, t, kwargs):
        sync()
        now = time.perf_counter()
        print(f"step {i + 1}/{steps}  {now - last[0]:.4f} s", flush=True)
        last[0] = now
        return kwargs

    start = time.perf_counter()
    sync()
    last[0] = time.perf_counter()
    image = pipe(prompt, height=height, width=width, num_inference_steps=steps, guidance_scale=3.5,
                 max_sequence_length=seq, generator=torch.Generator().manual_seed(seed),
                 callback_on_step_end=on_step).images[0]
    image.save(out_png)
    print(f"diffusers whole call {time.perf_counter() - start:.3f} s")


def compare(a_png, b_png):
    a = np.asarray(Image.open(a_png).convert("RGB")).astype(np.float64)
    b = np.asarray(Image.open(b_png).convert("RGB")).astype(np.float64)
    mse = ((a - b) ** 2).mean()
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    print(f"image {a_png} vs {b_png}: max diff {int(np.abs(a - b).max())}/255, PSNR {psnr:.1f} dB")


def sdpa(device, seq, heads, head_dim):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    q, k, v = (torch.randn(1, heads, seq, head_dim, device=device, dtype=torch.bfloat16) for _ in range(3))
    for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
        try:
            with sdpa_kernel([backend]):
                times = []
                for _ in range(25):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    F.scaled_dot_product_attention(q, k, v)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
            ms = sorted(times[5:])[len(times[5:]) // 2] * 1e3
            tflops = 4 * seq * seq * heads * head_dim / (ms / 1e3) / 1e12
            print(f"sdpa {name:9s} S {seq} {heads}x{head_dim} bf16: {ms:.3f} ms ({tflops:.0f} TFLOP/s)")
        except RuntimeError as e:
            print(f"sdpa {name}: not available ({str(e).splitlines()[0][:80]})")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "widen":
        widen(args[0], *map(int, args[1:5]))
    elif cmd == "run":
        run(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), int(args[5]), args[6], int(args[7]), args[8])
    elif cmd == "compare":
        compare(args[0], args[1])
    elif cmd == "sdpa":
        sdpa(args[0], int(args[1]), int(args[2]), int(args[3]))
    else:
        sys.exit(f"unknown command {cmd}")
