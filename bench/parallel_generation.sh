#!/usr/bin/env bash
# Parallel generation benchmark (issue: hybrid parallel generation).
# 2 ranks against 1 on the small preset, one thread per rank, CPU/Gloo:
# denoising time and speedup for ulysses 2, ring 2, pipefusion 2, cfg 2
# (true CFG) and dp 2 (two prompts); bytes sent per rank per step by
# method; PipeFusion's image error against serial for warmup 0, 1, 2.
#
#   bench/parallel_generation.sh            # after scripts/build
#   STEPS=12 REPEATS=3 bench/parallel_generation.sh
#
# Prints a Markdown table (recorded in docs/benchmarks.md). Each time is
# the minimum over REPEATS runs of rank 0's "denoising" time (all steps,
# until the final latents are on rank 0; no text encoding, no VAE).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
WORK=${WORK:-build/bench/parallel_generation}
MODEL=${MODEL:-$WORK/flux-small}
STEPS=${STEPS:-20}
REPEATS=${REPEATS:-1}
PY=${PY:-$HOME/.cache/ditserve/venv/bin/python3}
mkdir -p "$WORK"
[ -f "$MODEL/model_index.json" ] || "$BIN/ditserve-make-model" --preset small --out "$MODEL" > /dev/null 2>&1

A="a red circle on a blue background"
B="a green square on a white background"
CFG=(--negative_prompt "a blurry picture" --true_cfg_scale 3.5)

# run NAME ARGS...: REPEATS runs; prints the best denoising seconds.
run() {
  local name=$1 best="" t
  shift
  for ((i = 0; i < REPEATS; i++)); do
    "$BIN/ditserve-run" --threads 1 --device cpu --model "$MODEL" --num_inference_steps "$STEPS" --seed 1 \
      --save_latents --comm_stats --output_dir "$WORK/$name" "$@" > "$WORK/$name.log" 2>&1 || {
      echo "$name failed:" >&2; tail -5 "$WORK/$name.log" >&2; exit 1; }
    t=$(sed -n 's/.*denoising \([0-9.]*\) s.*/\1/p' "$WORK/$name.log")
    best=$(awk -v a="$best" -v b="$t" 'BEGIN { print (a == "" || b < a) ? b : a }')
  done
  echo "$best"
}

# bytes NAME: the largest per-rank bytes per step, by method.
bytes() {
  awk '/ comm / { m = $4; b = $12; if (b > max[m]) max[m] = b }
       END { for (m in max) if (m != "embeddings" && m != "data" && m != "sequence") printf "%s %d; ", m, max[m] }' \
    "$WORK/$1.log"
}

echo "| method | 1 rank (s) | 2 ranks (s) | speedup | bytes sent per rank per step |"
echo "| --- | ---: | ---: | ---: | --- |"
base=$(run base --nproc 1 --prompt "$A")
for m in ulysses ring pipefusion pipefusion_m4; do
  case $m in
    ulysses) flags=(--ulysses_degree 2) ;;
    ring) flags=(--ring_degree 2) ;;
    pipefusion) flags=(--pipefusion_parallel_degree 2) ;;
    pipefusion_m4) flags=(--pipefusion_parallel_degree 2 --num_pipeline_patch 4) ;;
  esac
  t=$(run "$m" --nproc 2 "${flags[@]}" --prompt "$A")
  echo "| $m 2 | $base | $t | $(awk -v a="$base" -v b="$t" 'BEGIN { printf "%.2fx", a / b }') | $(bytes "$m") |"
done
base_cfg=$(run base_cfg --nproc 1 --prompt "$A" "${CFG[@]}")
t=$(run cfg --nproc 2 --use_cfg_parallel --prompt "$A" "${CFG[@]}")
echo "| cfg 2 (true CFG) | $base_cfg | $t | $(awk -v a="$base_cfg" -v b="$t" 'BEGIN { printf "%.2fx", a / b }') | $(bytes cfg) |"
base_dp=$(run base_dp --nproc 1 --prompt "$A" --prompt "$B")
t=$(run dp --nproc 2 --data_parallel_degree 2 --prompt "$A" --prompt "$B")
echo "| dp 2 (two prompts) | $base_dp | $t | $(awk -v a="$base_dp" -v b="$t" 'BEGIN { printf "%.2fx", a / b }') | $(bytes dp) |"

echo
echo "| PipeFusion 2 against serial | latents max-abs | image PSNR (dB) | denoising (s) |"
echo "| --- | ---: | ---: | ---: |"
for w in 0 1 2; do
  t=$(run "pf_w$w" --nproc 2 --pipefusion_parallel_degree 2 --warmup_steps "$w" --prompt "$A")
  "$PY" - "$WORK/base" "$WORK/pf_w$w" "$w" "$t" <<'PYEOF'
import sys, numpy as np
from PIL import Image
from safetensors.numpy import load_file
a, b, w, t = sys.argv[1:]
la = load_file(a + "/image-000.latents.safetensors")["latents"]
lb = load_file(b + "/image-000.latents.safetensors")["latents"]
ia = np.asarray(Image.open(a + "/image-000.png"), dtype=np.float64)
ib = np.asarray(Image.open(b + "/image-000.png"), dtype=np.float64)
mse = ((ia - ib) ** 2).mean()
psnr = float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
print(f"| warmup_steps {w} | {np.abs(la - lb).max():.3g} | {psnr:.1f} | {t} |")
PYEOF
done
