#!/usr/bin/env bash
# CPU allocator setting (util/malloc_tuning.h): one ditserve-generate run on
# the small preset at 512x512, with the engine's default (freed memory kept
# in the heap) and with glibc's own behaviour (opted out through
# GLIBC_TUNABLES, which the engine leaves alone when it names a malloc
# tunable). Alternates the two REPEATS times; prints per-run transformer
# step times, the whole run and the page faults (perf stat, if present).
#
#   bench/cpu_allocator.sh                 # after scripts/build
#   REPEATS=5 STEPS=4 bench/cpu_allocator.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
WORK=${WORK:-build/bench/cpu_allocator}
MODEL=${MODEL:-build/bench/parallel_generation/flux-small}
STEPS=${STEPS:-2}
REPEATS=${REPEATS:-3}
mkdir -p "$WORK"
[ -f "$MODEL/model_index.json" ] || "$BIN/ditserve-make-model" --preset small --out "$MODEL" > /dev/null 2>&1

echo "| allocator | steps (s) | whole run (s) | page faults |"
echo "| --- | --- | ---: | ---: |"
for ((i = 0; i < REPEATS; i++)); do
  for mode in kept glibc; do
    tunables=""
    [ "$mode" = glibc ] && tunables="glibc.malloc.check=0"  # any malloc tunable opts out
    cmd=("$BIN/ditserve-generate" --threads 1 --model "$MODEL" --num_inference_steps "$STEPS" --seed 1
         --height 512 --width 512 --prompt "a red circle on a blue background" --output "$WORK/$mode.png")
    if command -v perf > /dev/null; then
      GLIBC_TUNABLES=$tunables perf stat -e page-faults -o "$WORK/$mode.stat" -- "${cmd[@]}" > "$WORK/$mode.log" 2>&1
      faults=$(awk '/page-faults/ { print $1 }' "$WORK/$mode.stat")
    else
      GLIBC_TUNABLES=$tunables "${cmd[@]}" > "$WORK/$mode.log" 2>&1
      faults="-"
    fi
    steps=$(sed -n 's/^step [0-9]*\/[0-9]*  \([0-9.]*\) s.*/\1/p' "$WORK/$mode.log" | tr '\n' ' ')
    total=$(sed -n 's/^wrote .* in \([0-9.]*\) s$/\1/p' "$WORK/$mode.log")
    echo "| $mode | ${steps% } | $total | $faults |"
  done
done
