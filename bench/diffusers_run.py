"""Benchmark helper: a family's diffusers pipeline on CPU (the class
model_index.json names: StableDiffusion3Pipeline, PixArtSigmaPipeline or
HunyuanDiTPipeline), timed per step like ditserve-run's log.

usage: diffusers_run.py MODEL_DIR THREADS HEIGHT WIDTH STEPS SEQ PROMPT SEED OUT_PNG
  float32, torch.set_num_threads(THREADS), the pipeline's default guidance
  (CFG against the empty prompt: 7 for SD3, 4.5 for PixArt, 5 for
  HunyuanDiT); PixArt with clean_caption=False, PixArt and HunyuanDiT
  without resolution binning (as ditserve); SEQ is SD3's and PixArt's
  max_sequence_length (HunyuanDiT's pipeline fixes its own). Prints
  "step i/N  T s" per step (the time since the previous step ended) and
  writes the image.
"""
import json
import sys
import time

import torch
import diffusers

model, threads, height, width, steps, seq, prompt, seed, out = sys.argv[1:10]
torch.set_num_threads(int(threads))
steps = int(steps)
name = json.load(open(model + "/model_index.json"))["_class_name"]
pipe = getattr(diffusers, name).from_pretrained(model, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)  # its carriage returns would hide the step lines
last = [0.0]


def tick(i):
    now = time.perf_counter()
    print(f"step {i + 1}/{steps}  {now - last[0]:.4f} s", flush=True)
    last[0] = now


kwargs = dict(height=int(height), width=int(width), num_inference_steps=steps,
              generator=torch.Generator().manual_seed(int(seed)))
if name.startswith("PixArt"):
    # PixArt's pipelines take the older per-step callback.
    kwargs.update(max_sequence_length=int(seq), clean_caption=False, use_resolution_binning=False,
                  callback=lambda i, t, latents: tick(i), callback_steps=1)
else:
    def on_step_end(pipeline, i, t, tensors):
        tick(i)
        return tensors
    kwargs["callback_on_step_end"] = on_step_end
    if name == "HunyuanDiTPipeline":
        kwargs["use_resolution_binning"] = False
    else:
        kwargs["max_sequence_length"] = int(seq)
start = last[0] = time.perf_counter()
with torch.no_grad():
    image = pipe(prompt, **kwargs).images[0]
image.save(out)
print(f"diffusers whole call {time.perf_counter() - start:.3f} s")
