"""Benchmark helper: diffusers' PixArtSigmaPipeline on CPU, timed per step
like ditserve-run's log.

usage: pixart_diffusers_run.py MODEL_DIR THREADS HEIGHT WIDTH STEPS SEQ PROMPT SEED OUT_PNG
  float32, torch.set_num_threads(THREADS), the pipeline's default guidance
  (CFG 4.5 against the empty prompt), clean_caption=False and no resolution
  binning (as ditserve). Prints "step i/N  T s" per step (the time since the
  previous step ended) and writes the image.
"""
import sys
import time

import torch
from diffusers import PixArtSigmaPipeline

model, threads, height, width, steps, seq, prompt, seed, out = sys.argv[1:10]
torch.set_num_threads(int(threads))
steps = int(steps)
pipe = PixArtSigmaPipeline.from_pretrained(model, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)  # its carriage returns would hide the step lines
last = [0.0]


def on_step(i, t, latents):
    now = time.perf_counter()
    print(f"step {i + 1}/{steps}  {now - last[0]:.4f} s", flush=True)
    last[0] = now


start = last[0] = time.perf_counter()
with torch.no_grad():
    image = pipe(prompt, height=int(height), width=int(width), num_inference_steps=steps,
                 max_sequence_length=int(seq), generator=torch.Generator().manual_seed(int(seed)),
                 clean_caption=False, use_resolution_binning=False, callback=on_step, callback_steps=1).images[0]
image.save(out)
print(f"diffusers whole call {time.perf_counter() - start:.3f} s")
