#!/usr/bin/env bash
# Parallel methods against the serial result on the trained demo model
# (models/flux-shapes; issue: a small text-to-image model trained by the
# project). 128×128, 20 steps, true CFG 4 (negative prompt " "), fp32, CPU
# gangs on this machine:
#   - PipeFusion with 2 and 4 stages, num_pipeline_patch 2 and 4,
#     warmup_steps 0, 1, 2: max-abs error of the final latents and PSNR of
#     the image against the serial run;
#   - Ulysses 2, Ring 2, Ulysses 2 × Ring 2, CFG parallel (true CFG) and
#     data parallel against their serial runs (expected: float rounding);
#   - docs/images/pipefusion-vs-serial.png: serial and PipeFusion images
#     side by side (with their settings), for a look.
#
#   bench/demo_model_parallel.sh            # after scripts/build
#
# Prints Markdown tables (recorded in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
MODEL=${MODEL:-models/flux-shapes}
WORK=${WORK:-build/bench/demo_model_parallel}
PY=${PY:-$HOME/.cache/ditserve/venv/bin/python3}
SIZE=128
STEPS=20
PROMPT=${PROMPT:-"a red circle on a blue background"}
CFG=(--negative_prompt " " --true_cfg_scale 4)
mkdir -p "$WORK" docs/images

# run NAME ARGS...: one generation (seed 1) into $WORK/NAME.
run() {
  local name=$1
  shift
  "$BIN/ditserve-run" --threads 1 --device cpu --model "$MODEL" --height $SIZE --width $SIZE \
    --num_inference_steps $STEPS --seed 1 --save_latents --output_dir "$WORK/$name" "${CFG[@]}" "$@" \
    > "$WORK/$name.log" 2>&1 || { echo "$name failed:" >&2; tail -5 "$WORK/$name.log" >&2; exit 1; }
}

# compare SERIAL NAME LABEL: a table row of NAME against SERIAL.
compare() {
  "$PY" - "$WORK/$1" "$WORK/$2" "$3" <<'PYEOF'
import sys, numpy as np
from PIL import Image
from safetensors.numpy import load_file
a, b, label = sys.argv[1:]
la = load_file(a + "/image-000.latents.safetensors")["latents"]
lb = load_file(b + "/image-000.latents.safetensors")["latents"]
ia = np.asarray(Image.open(a + "/image-000.png"), dtype=np.float64)
ib = np.asarray(Image.open(b + "/image-000.png"), dtype=np.float64)
mse = ((ia - ib) ** 2).mean()
psnr = "identical" if mse == 0 else f"{10 * np.log10(255 ** 2 / mse):.1f}"
print(f"| {label} | {np.abs(la - lb).max():.3g} | {psnr} | {int((ia != ib).sum())} |")
PYEOF
}

run serial --nproc 1 --prompt "$PROMPT"

echo "| PipeFusion (prompt: $PROMPT) | latents max-abs | image PSNR (dB) | uint8 values differing |"
echo "| --- | ---: | ---: | ---: |"
for stages in 2 4; do
  for patches in 2 4; do
    for w in 0 1 2; do
      name="pf${stages}_m${patches}_w${w}"
      run "$name" --nproc $stages --pipefusion_parallel_degree $stages --num_pipeline_patch $patches \
        --warmup_steps $w --prompt "$PROMPT"
      compare serial "$name" "$stages stages, $patches patches, warmup $w"
    done
  done
done

echo
echo "| method | latents max-abs | image PSNR (dB) | uint8 values differing |"
echo "| --- | ---: | ---: | ---: |"
run ulysses2 --nproc 2 --ulysses_degree 2 --prompt "$PROMPT"
compare serial ulysses2 "Ulysses 2"
run ring2 --nproc 2 --ring_degree 2 --prompt "$PROMPT"
compare serial ring2 "Ring 2"
run usp4 --nproc 4 --ulysses_degree 2 --ring_degree 2 --prompt "$PROMPT"
compare serial usp4 "Ulysses 2 × Ring 2"
run cfg2 --nproc 2 --use_cfg_parallel --prompt "$PROMPT"
compare serial cfg2 "CFG parallel 2"
run dp2 --nproc 2 --data_parallel_degree 2 --prompt "$PROMPT" --prompt "a red circle on a green background"
compare serial dp2 "data parallel 2 (image 0)"

"$PY" - "$WORK" docs/images/pipefusion-vs-serial.png "$PROMPT" <<'PYEOF'
import sys
from PIL import Image, ImageDraw
work, out, prompt = sys.argv[1:]
cells = [("serial", "serial"), ("pf2_m2_w1", "PF 2, M 2, warmup 1"), ("pf4_m4_w1", "PF 4, M 4, warmup 1"),
         ("pf2_m2_w0", "PF 2, M 2, warmup 0"), ("pf4_m4_w0", "PF 4, M 4, warmup 0")]
scale, pad, label_h = 2, 8, 18
tiles = [Image.open(f"{work}/{d}/image-000.png").convert("RGB") for d, _ in cells]
w, h = tiles[0].size[0] * scale, tiles[0].size[1] * scale
sheet = Image.new("RGB", (len(cells) * (w + pad) + pad, h + 2 * pad + 2 * label_h), "white")
draw = ImageDraw.Draw(sheet)
draw.text((pad, pad // 2), f'"{prompt}", 128x128, 20 steps, true CFG 4, seed 1', fill="black")
for i, (tile, (_, label)) in enumerate(zip(tiles, cells)):
    x = pad + i * (w + pad)
    sheet.paste(tile.resize((w, h), Image.NEAREST), (x, pad + label_h))
    draw.text((x, pad + label_h + h + 2), label, fill="black")
sheet.save(out)
print(f"\nwrote {out}")
PYEOF
