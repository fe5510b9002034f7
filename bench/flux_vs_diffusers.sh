#!/usr/bin/env bash
# ditserve-generate against diffusers' FluxPipeline on one GPU, on the same
# checkpoint: the small preset's text encoders and VAE with a transformer of
# FLUX.1's width (24 heads x 128) and a chosen depth, bf16, 1024x1024.
#   bench/flux_vs_diffusers.sh BUILD_DIR WORK_DIR
# Environment: LAYERS, SINGLE (blocks; default 2 and 4, the small preset's), SIZE (1024), STEPS
# (20), SEQ (T5 tokens, 512), ROUNDS (2), DEVICE (cuda), DTYPE (bf16 or f32). Needs python3 with torch and
# diffusers. Prints each run's median step time (steps 3..N) and the PSNR
# of ditserve's image against diffusers'.
set -euo pipefail
BUILD=$1
WORK=$2
LAYERS=${LAYERS:-2} SINGLE=${SINGLE:-4} SIZE=${SIZE:-1024} STEPS=${STEPS:-20} SEQ=${SEQ:-512}
ROUNDS=${ROUNDS:-2} DEVICE=${DEVICE:-cuda}
export DTYPE=${DTYPE:-bf16}
PROMPT="a red circle on a blue background"
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"
rm -rf "$WORK/model"
"$BUILD/bin/ditserve-make-model" --preset small --dtype bf16 --seed 1 --out "$WORK/model" >/dev/null
python3 "$HERE/flux_vs_diffusers.py" widen "$WORK/model" 24 128 "$LAYERS" "$SINGLE"

# Median of the step times of steps 3..N in a log of "step i/N  T s" lines.
median_step() {
  awk '/^step /{split($2, a, "/"); if (a[1] >= 3) print $3}' "$1" | sort -g |
    awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

for round in $(seq 1 "$ROUNDS"); do
  "$BUILD/bin/ditserve-generate" --model "$WORK/model" --device "$DEVICE" --dtype "$DTYPE" --height "$SIZE" \
    --width "$SIZE" --num_inference_steps "$STEPS" --max_sequence_length "$SEQ" --prompt "$PROMPT" \
    --seed 42 --output "$WORK/ditserve.png" >"$WORK/ditserve-$round.log"
  python3 "$HERE/flux_vs_diffusers.py" run "$WORK/model" "$DEVICE" "$SIZE" "$SIZE" "$STEPS" "$SEQ" \
    "$PROMPT" 42 "$WORK/diffusers.png" >"$WORK/diffusers-$round.log"
  echo "round $round: ditserve $(median_step "$WORK/ditserve-$round.log") s/step," \
    "diffusers $(median_step "$WORK/diffusers-$round.log") s/step (median of steps 3..$STEPS)"
done
python3 "$HERE/flux_vs_diffusers.py" compare "$WORK/ditserve.png" "$WORK/diffusers.png"
