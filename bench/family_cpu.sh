#!/usr/bin/env bash
# A model family on CPU, small preset (bench/sd3_cpu.sh, bench/pixart_cpu.sh,
# bench/hunyuandit_cpu.sh set FAMILY and its defaults):
#  1. ditserve-run (one rank, one thread) against the family's diffusers
#     pipeline (one thread, bench/diffusers_run.py) on the same
#     checkpoint in the same run: median seconds per step of steps 3..N,
#     and the PSNR of ditserve's image against diffusers'.
#  2. 2 ranks against 1 (one thread per rank): cfg 2, ulysses 2,
#     pipefusion 2; rank 0's denoising seconds, paired per round.
# Both run the family's default guidance: CFG (7 for SD3, 4.5 for PixArt,
# 5 for HunyuanDiT) against the empty prompt (batch 2).
#
#   FAMILY=sd3 VARIANT=sd3.5-medium STEPS=8 ROUNDS=3 SIZE=512 bench/family_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/bin}
FAMILY=${FAMILY:-sd3}
case $FAMILY in
  sd3) VARIANT=${VARIANT:-sd3.5-medium} MAKE=(--family sd3 --variant "$VARIANT") CFG=7 SEQ=${SEQ:-256} ;;
  pixart-sigma) VARIANT=pixart-sigma MAKE=(--family pixart-sigma) CFG="4.5, DPM-Solver++ 2M" SEQ=${SEQ:-300} ;;
  hunyuandit) VARIANT=hunyuandit MAKE=(--family hunyuandit) CFG="5, DDPM v-prediction" SEQ=${SEQ:-256} ;;
  *) echo "FAMILY must be sd3, pixart-sigma or hunyuandit, got $FAMILY" >&2; exit 2 ;;
esac
WORK=${WORK:-build/bench/$FAMILY}
MODEL=${MODEL:-$WORK/$VARIANT-small}
STEPS=${STEPS:-8} ROUNDS=${ROUNDS:-2} SIZE=${SIZE:-512}
PY=${PY:-$HOME/.cache/ditserve/venv/bin/python3}
PROMPT="a red circle on a blue background"
mkdir -p "$WORK"
[ -f "$MODEL/model_index.json" ] ||
  "$BIN/ditserve-make-model" "${MAKE[@]}" --preset small --out "$MODEL" > "$WORK/make-model.log" 2>&1

median_step() {
  awk '/^step /{split($2, a, "/"); if (a[1] >= 3) print $3}' "$1" | sort -g |
    awk '{v[NR] = $1} END {printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
run() {  # run NAME FLAGS...: ditserve-run into $WORK/NAME; log $WORK/NAME.log
  local name=$1
  shift
  "$BIN/ditserve-run" --threads 1 --device cpu --model "$MODEL" --num_inference_steps "$STEPS" --seed 42 \
    --height "$SIZE" --width "$SIZE" --max_sequence_length "$SEQ" --prompt "$PROMPT" \
    --output_dir "$WORK/$name" "$@" > "$WORK/$name.log" 2>&1 || { echo "$name failed:" >&2; tail -5 "$WORK/$name.log" >&2; exit 1; }
}
denoising() { sed -n 's/.*denoising \([0-9.]*\) s.*/\1/p' "$WORK/$1.log"; }

echo "## $VARIANT small, ${SIZE}x${SIZE}, $STEPS steps, max_sequence_length $SEQ, CFG $CFG"
echo
echo "| round | ditserve s/step | diffusers s/step | ratio |"
echo "| --- | ---: | ---: | ---: |"
for ((r = 1; r <= ROUNDS; r++)); do
  run serial
  "$PY" bench/diffusers_run.py "$MODEL" 1 "$SIZE" "$SIZE" "$STEPS" "$SEQ" "$PROMPT" 42 "$WORK/diffusers.png" \
    > "$WORK/diffusers.log" 2>&1 || { tail -5 "$WORK/diffusers.log" >&2; exit 1; }
  d=$(median_step "$WORK/serial.log") p=$(median_step "$WORK/diffusers.log")
  echo "| $r | $d | $p | $(awk -v a="$d" -v b="$p" 'BEGIN {printf "%.2f", a / b}') |"
done
echo
"$PY" bench/flux_vs_diffusers.py compare "$WORK/serial/image-000.png" "$WORK/diffusers.png"
echo
echo "| method | 1 rank (s, each round) | 2 ranks (s, each round) | speedup (median of paired ratios) |"
echo "| --- | --- | --- | ---: |"
declare -A ONE TWO RATIOS
for ((r = 1; r <= ROUNDS; r++)); do
  run base --nproc 1
  b=$(denoising base)
  for m in cfg ulysses pipefusion; do
    case $m in
      cfg) run $m --nproc 2 --use_cfg_parallel ;;
      ulysses) run $m --nproc 2 --ulysses_degree 2 ;;
      pipefusion) run $m --nproc 2 --pipefusion_parallel_degree 2 ;;
    esac
    t=$(denoising $m)
    ONE[$m]+="$b " TWO[$m]+="$t "
    RATIOS[$m]+="$(awk -v a="$b" -v b="$t" 'BEGIN {printf "%.3f", a / b}') "
  done
done
for m in cfg ulysses pipefusion; do
  med=$(echo "${RATIOS[$m]}" | tr ' ' '\n' | sed '/^$/d' | sort -g |
        awk '{v[NR] = $1} END {printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
  echo "| $m 2 | ${ONE[$m]}| ${TWO[$m]}| ${med}x (${RATIOS[$m]% }) |"
done
