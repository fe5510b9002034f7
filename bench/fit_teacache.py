"""Fits TeaCache's rescaling polynomial for a diffusers checkpoint.

TeaCache predicts how much the model output changes between consecutive
steps from how much the first block's modulated input changed. This runs
diffusers' own pipeline on the checkpoint (prompts x steps), records per
step x = rel. L1 change of transformer_blocks[0].norm1's modulated input
and y = rel. L1 change of the transformer output, and fits y = poly(x) of
degree 4 (numpy.polyfit, highest power first: the order ditserve's
ModelFamily::TeaCachePolynomial returns).

usage: fit_teacache.py MODEL_DIR [--size 256] [--steps 28] [--prompts N] [--degree 4]
Prints the coefficients, the fit's residual, and the (x, y) pairs' range.
"""
import argparse
import json

import numpy as np
import torch
from diffusers import DiffusionPipeline

PROMPTS = ["a red circle on a blue background", "a yellow square on a white background",
           "a green triangle on a black background", "a white circle on a red background",
           "a black square on a yellow background", "a blue triangle on a green background"]


def rel_l1(now, before):
    return ((now - before).abs().mean() / before.abs().mean()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--degree", type=int, default=4,
                    help="polynomial degree (TeaCache's is 4; a narrow x range wants fewer)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    block = pipe.transformer.transformer_blocks[0]
    seen = {"mod": [], "out": []}
    block.norm1.register_forward_hook(lambda m, i, o: seen["mod"].append(o[0].detach().clone()))
    pipe.transformer.register_forward_hook(lambda m, i, o: seen["out"].append(o[0].detach().clone()))
    xs, ys = [], []
    for p in PROMPTS[:args.prompts]:
        seen["mod"].clear()
        seen["out"].clear()
        pipe(p, height=args.size, width=args.size, num_inference_steps=args.steps,
             generator=torch.Generator().manual_seed(0), output_type="latent")
        for t in range(1, len(seen["out"])):
            xs.append(rel_l1(seen["mod"][t], seen["mod"][t - 1]))
            ys.append(rel_l1(seen["out"][t], seen["out"][t - 1]))
    xs, ys = np.array(xs), np.array(ys)
    coefficients = np.polyfit(xs, ys, args.degree)
    residual = float(np.sqrt(np.mean((np.polyval(coefficients, xs) - ys) ** 2)))
    print(json.dumps({"model": args.model, "pipeline": type(pipe).__name__, "size": args.size, "steps": args.steps,
                      "prompts": args.prompts, "coefficients": [float(c) for c in coefficients],
                      "rms_residual": residual, "x_range": [float(xs.min()), float(xs.max())],
                      "y_range": [float(ys.min()), float(ys.max())], "pairs": len(xs)}, indent=1))


if __name__ == "__main__":
    main()
