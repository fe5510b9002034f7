#!/usr/bin/env bash
# Step caching on the trained demo model (models/flux-shapes), CPU gangs on
# this machine: for serial and each 2-rank method, the uncached run and
# First-Block-Cache / TeaCache at several thresholds. Per row: steps cached,
# denoising seconds (best of REPS runs), speedup against the same
# configuration uncached, and the image's PSNR against it.
#
#   bench/step_cache_cpu.sh            # after scripts/build
#   SIZE=128 STEPS=28 REPS=2 CONFIGS="serial u2" bench/step_cache_cpu.sh
#
# Prints a Markdown table (recorded in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
MODEL=${MODEL:-models/flux-shapes}
WORK=${WORK:-build/bench/step_cache_cpu}
PY=${PY:-$HOME/.cache/ditserve/venv/bin/python3}
SIZE=${SIZE:-256}
STEPS=${STEPS:-28}
REPS=${REPS:-2}
CONFIGS=${CONFIGS:-"serial u2 r2 cfg2 pf2"}
FB_THRESHOLDS=${FB_THRESHOLDS:-"0.05 0.1 0.12 0.2 0.3"}
TEA_THRESHOLDS=${TEA_THRESHOLDS:-"0.2 0.4 0.6 0.8"}
PROMPT=${PROMPT:-"a red circle on a blue background"}
mkdir -p "$WORK"

flags_of() {
  case $1 in
    serial) echo "--nproc 1" ;;
    u2) echo "--nproc 2 --ulysses_degree 2" ;;
    r2) echo "--nproc 2 --ring_degree 2" ;;
    cfg2) echo "--nproc 2 --use_cfg_parallel" ;;
    pf2) echo "--nproc 2 --pipefusion_parallel_degree 2" ;;
    *) echo "unknown configuration $1" >&2; exit 2 ;;
  esac
}

# run NAME CONFIG CACHE_FLAGS...: REPS generations into $WORK/NAME; prints
# the best denoising seconds.
run() {
  local name=$1 config=$2 best=""
  shift 2
  for _ in $(seq "$REPS"); do
    # shellcheck disable=SC2046
    "$BIN/ditserve-run" $(flags_of "$config") --device cpu --model "$MODEL" --height "$SIZE" --width "$SIZE" \
      --num_inference_steps "$STEPS" --seed 1 --negative_prompt " " --true_cfg_scale 4 --prompt "$PROMPT" \
      --output_dir "$WORK/$name" "$@" > "$WORK/$name.log" 2>&1 \
      || { echo "$name failed:" >&2; tail -5 "$WORK/$name.log" >&2; exit 1; }
    local s
    s=$(sed -n 's/.*denoising \([0-9.]*\) s.*/\1/p' "$WORK/$name.log" | tail -1)
    if [[ -z $best ]] || awk "BEGIN{exit !($s < $best)}"; then best=$s; fi
  done
  echo "$best"
}

# row CONFIG LABEL NAME SECONDS UNCACHED_SECONDS
row() {
  "$PY" - "$WORK/$1-none" "$WORK/$3" "$1" "$2" "$4" "$5" "$STEPS" <<'PYEOF'
import os, sys, numpy as np
from PIL import Image
ref, run, config, label, s, s0, steps = sys.argv[1:]
a = np.asarray(Image.open(ref + "/image-000.png"), dtype=np.float64)
b = np.asarray(Image.open(run + "/image-000.png"), dtype=np.float64)
mse = ((a - b) ** 2).mean()
psnr = "identical" if mse == 0 else f"{10 * np.log10(255 ** 2 / mse):.1f}"
path = run + "/image-000.steps"
cached = open(path).read().count("0") if os.path.exists(path) else 0
print(f"| {config} | {label} | {cached}/{steps} | {float(s):.3f} | {float(s0) / float(s):.2f}x | {psnr} |")
PYEOF
}

echo "| method | cache (threshold) | steps cached | denoising s | speedup | PSNR vs uncached (dB) |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for config in $CONFIGS; do
  base=$(run "$config-none" "$config")
  row "$config" "none" "$config-none" "$base" "$base"
  for t in $FB_THRESHOLDS; do
    s=$(run "$config-fb$t" "$config" --use_fbcache --cache_threshold "$t")
    row "$config" "first-block $t" "$config-fb$t" "$s" "$base"
  done
  for t in $TEA_THRESHOLDS; do
    s=$(run "$config-tea$t" "$config" --use_teacache --cache_threshold "$t")
    row "$config" "teacache $t" "$config-tea$t" "$s" "$base"
  done
done
