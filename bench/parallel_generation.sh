#!/usr/bin/env bash
# Parallel generation benchmark (issue: hybrid parallel generation).
# 2 ranks against 1 on the small preset, one thread per rank, CPU (shared
# memory between the ranks; SHM=false: Gloo over loopback TCP):
# denoising time and speedup for ulysses 2, ring 2, pipefusion 2, cfg 2
# (true CFG) and dp 2 (two prompts); bytes sent per rank per step by
# method; PipeFusion's image error against serial for warmup 0, 1, 2.
#
#   bench/parallel_generation.sh            # after scripts/build
#   STEPS=12 ROUNDS=3 bench/parallel_generation.sh
#   ROUNDS=5 METHODS="ulysses ring" CFG_DP=0 ERRORS=0 bench/parallel_generation.sh
#   SHM=false bench/parallel_generation.sh   # the ranks exchange through Gloo
#   BIN=build-gpu/bin bench/parallel_generation.sh   # binaries built by scripts/gpu-check
#
# Prints Markdown tables (recorded in docs/benchmarks.md). Times are rank
# 0's "denoising" time (all steps, until the final latents are on rank 0;
# no text encoding, no VAE). Speedups are paired: each of ROUNDS rounds runs
# the 1-rank baseline and then every 2-rank method once, each method's ratio
# is taken against its own round's baseline, and the table gives the median
# ratio with every ratio listed, so slow drift of a shared machine cancels.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/small_preset.sh  # BIN, WORK, MODEL
STEPS=${STEPS:-20}
ROUNDS=${ROUNDS:-${REPEATS:-1}}
METHODS=${METHODS:-ulysses ring pipefusion pipefusion_m4}  # the single-prompt methods to time
CFG_DP=${CFG_DP:-1}  # 0: skip the CFG and data parallel rows
ERRORS=${ERRORS:-1}  # 0: skip PipeFusion's error table
SHM=${SHM:-true}     # false: Gloo over loopback TCP instead of shared memory
PY=${PY:-$HOME/.cache/ditserve/venv/bin/python3}

A="a red circle on a blue background"
B="a green square on a white background"
CFG=(--negative_prompt "a blurry picture" --true_cfg_scale 3.5)

# set_flags NAME: FLAGS = the ditserve-run flags of configuration NAME.
set_flags() {
  case $1 in
    base) FLAGS=(--nproc 1 --prompt "$A") ;;
    ulysses) FLAGS=(--nproc 2 --ulysses_degree 2 --prompt "$A") ;;
    ring) FLAGS=(--nproc 2 --ring_degree 2 --prompt "$A") ;;
    pipefusion) FLAGS=(--nproc 2 --pipefusion_parallel_degree 2 --prompt "$A") ;;
    pipefusion_m4) FLAGS=(--nproc 2 --pipefusion_parallel_degree 2 --num_pipeline_patch 4 --prompt "$A") ;;
    base_cfg) FLAGS=(--nproc 1 --prompt "$A" "${CFG[@]}") ;;
    cfg) FLAGS=(--nproc 2 --use_cfg_parallel --prompt "$A" "${CFG[@]}") ;;
    base_dp) FLAGS=(--nproc 1 --prompt "$A" --prompt "$B") ;;
    dp) FLAGS=(--nproc 2 --data_parallel_degree 2 --prompt "$A" --prompt "$B") ;;
    pf_w*) FLAGS=(--nproc 2 --pipefusion_parallel_degree 2 --warmup_steps "${1#pf_w}" --prompt "$A") ;;
    *) echo "unknown configuration $1" >&2; exit 1 ;;
  esac
}

# one NAME: runs configuration NAME once; prints its denoising seconds.
one() {
  set_flags "$1"
  "$BIN/ditserve-run" --threads 1 --device cpu --model "$MODEL" --num_inference_steps "$STEPS" --seed 1 \
    --shared_memory_transport="$SHM" --save_latents --comm_stats --output_dir "$WORK/$1" "${FLAGS[@]}" > "$WORK/$1.log" 2>&1 || {
    echo "$1 failed:" >&2; tail -5 "$WORK/$1.log" >&2; exit 1; }
  sed -n 's/.*denoising \([0-9.]*\) s.*/\1/p' "$WORK/$1.log"
}

# bytes NAME: the largest per-rank bytes per step, by method.
bytes() {
  awk '/ comm / { m = $4; b = $12; if (b > max[m]) max[m] = b }
       END { for (m in max) if (m != "embeddings" && m != "data" && m != "sequence") printf "%s %d; ", m, max[m] }' \
    "$WORK/$1.log"
}

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A TIMES RATIOS
# rounds BASE METHOD...: ROUNDS rounds of the baseline, then each method.
rounds() {
  local base=$1 r m tb t
  shift
  for ((r = 0; r < ROUNDS; r++)); do
    tb=$(one "$base")
    TIMES[$base]+="$tb "
    for m in "$@"; do
      t=$(one "$m")
      TIMES[$m]+="$t "
      RATIOS[$m]+="$(awk -v a="$tb" -v b="$t" 'BEGIN { printf "%.2f", a / b }') "
    done
  done
}
# row LABEL BASE METHOD
row() {
  echo "| $1 | ${TIMES[$2]% } | ${TIMES[$3]% } | $(echo "${RATIOS[$3]}" | median)x | ${RATIOS[$3]% } | $(bytes "$3") |"
}

# shellcheck disable=SC2086 # METHODS is a list
rounds base $METHODS
if [ "$CFG_DP" = 1 ]; then
  rounds base_cfg cfg
  rounds base_dp dp
fi
echo "| method | 1 rank (s, each round) | 2 ranks (s, each round) | speedup (median) | paired ratios | bytes sent per rank per step |"
echo "| --- | --- | --- | ---: | --- | --- |"
for m in $METHODS; do
  case $m in
    pipefusion) label="pipefusion 2 (2 patches)" ;;
    pipefusion_m4) label="pipefusion 2 (4 patches)" ;;
    *) label="$m 2" ;;
  esac
  row "$label" base "$m"
done
if [ "$CFG_DP" = 1 ]; then
  row "cfg 2 (true CFG)" base_cfg cfg
  row "dp 2 (two prompts)" base_dp dp
fi

[ "$ERRORS" = 1 ] || exit 0
echo
echo "| PipeFusion 2 against serial | latents max-abs | image PSNR (dB) | denoising (s) |"
echo "| --- | ---: | ---: | ---: |"
for w in 0 1 2; do
  t=$(one "pf_w$w")
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
