#!/usr/bin/env bash
# How much two 1-rank generations slow each other down on this machine:
# the ceiling every 2-rank speedup of bench/parallel_generation.sh runs
# under (both ranks compute at once on cores that share caches, memory and,
# on a VM, possibly the host's cores).
#
#   bench/side_by_side.sh                  # after scripts/build
#   ROUNDS=7 STEPS=20 bench/side_by_side.sh
#
# Each round runs the small preset's 1-rank generation alone, then two
# copies at the same time; prints each round's seconds and the median of the
# paired ratios (mean of the two copies / alone). Times are denoising only.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/small_preset.sh  # BIN, WORK, MODEL
STEPS=${STEPS:-10}
ROUNDS=${ROUNDS:-5}
mkdir -p "$WORK/side_by_side"
pid=
trap '[ -z "$pid" ] || kill "$pid" 2> /dev/null || true' EXIT  # the copy in the background, if we exit early

# one NAME: one 1-rank generation; prints its denoising seconds.
one() {
  "$BIN/ditserve-run" --nproc 1 --threads 1 --device cpu --model "$MODEL" --num_inference_steps "$STEPS" --seed 1 \
    --prompt "a red circle on a blue background" --output_dir "$WORK/side_by_side/$1" > "$WORK/side_by_side/$1.log" 2>&1 || {
    echo "$1 failed:" >&2; tail -5 "$WORK/side_by_side/$1.log" >&2; exit 1; }
  local t
  t=$(sed -n 's/.*denoising \([0-9.]*\) s.*/\1/p' "$WORK/side_by_side/$1.log")
  [ -n "$t" ] || { echo "$1: no denoising time in $WORK/side_by_side/$1.log" >&2; exit 1; }
  echo "$t"
}

echo "| round | alone (s) | side by side (s, s) | ratio |"
echo "| --- | ---: | --- | ---: |"
ratios=()
for ((r = 1; r <= ROUNDS; r++)); do
  alone=$(one alone)
  one a > "$WORK/side_by_side/a.time" &
  pid=$!
  b=$(one b)
  wait "$pid"
  pid=
  a=$(cat "$WORK/side_by_side/a.time")
  ratio=$(awk -v x="$a" -v y="$b" -v z="$alone" 'BEGIN { printf "%.3f", (x + y) / 2 / z }')
  ratios+=("$ratio")
  echo "| $r | $alone | $a $b | $ratio |"
done
printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END { printf "\nmedian ratio %.3f over %d rounds\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, NR }'
