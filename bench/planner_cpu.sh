#!/usr/bin/env bash
# The planner on this machine (issue: ditserve-plan): calibrates a profile
# with the engine's kernels and communicators, then prints the planner's
# predicted 2-rank speedups of the small preset (512², 20 steps, one thread
# per rank) next to the ones bench/parallel_generation.sh measured
# (docs/benchmarks.md, "After the CPU step work").
#   bench/planner_cpu.sh                 # after scripts/build
#   PROFILE=hardware/cpu-dev.json bench/planner_cpu.sh   # skip calibrating
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/small_preset.sh  # BIN, WORK, MODEL
PROFILE=${PROFILE:-$WORK/cpu-calibrated.json}
if [ ! -f "$PROFILE" ]; then
  "$BIN/ditserve-calibrate" --out "$PROFILE" --name "this machine, one thread per rank" > /dev/null
fi
PLAN="$BIN/ditserve-plan" python3 bench/planner_vs_measured.py "$PROFILE" "$MODEL"
