#!/usr/bin/env bash
# Open-loop serving benchmark (docs/benchmarks.md; issue 26's baseline):
# ditserve-server with a spawned CPU gang of one rank, then
#  1. the gang's capacity: closed loop at --concurrency 2 × max_batch_size
#     (completed requests per second with the queue never empty);
#  2. `ditserve-client bench --rate` at 50 %, 80 % and 95 % of it (Poisson
#     arrivals, seeded), p50/p99 latency and throughput per load.
#   bench/open_loop.sh                       # tiny Flux, 8-step requests
#   PRESET=small STEPS=4 SIZE=256 DURATION=120 bench/open_loop.sh [server flags]
#   CAPACITY=8.46 bench/open_loop.sh --join_policy batch   # the loads of a given capacity
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
PRESET=${PRESET:-tiny} STEPS=${STEPS:-8} SIZE=${SIZE:-0} DURATION=${DURATION:-60} BATCH=${BATCH:-4}
MODEL=build/flux-$PRESET
LOG=build/open-loop-server.log
[ -f "$MODEL/model_index.json" ] || "$BIN/ditserve-make-model" --preset "$PRESET" --out "$MODEL" > build/make-model.log 2>&1
rm -f "$LOG"
"$BIN/ditserve-server" --model "$MODEL" --spawn_workers --device cpu --threads 1 --host 127.0.0.1 \
  --port 0 --metrics_port 0 --print_ports --max_queue_size 1024 --max_batch_size "$BATCH" "$@" > "$LOG" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/^{"port": \([0-9]*\),.*/\1/p' "$LOG" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$LOG"; exit 1; }
client=("$BIN/ditserve-client" --server "127.0.0.1:$port")
req=(--num_inference_steps "$STEPS" --height "$SIZE" --width "$SIZE" --prompt "a red circle on a blue background")
"${client[@]}" --wait_ready_s 300 bench --concurrency 1 --requests 3 "${req[@]}" > /dev/null
capacity=${CAPACITY:-$("${client[@]}" bench --concurrency $((2 * BATCH)) --duration "$DURATION" "${req[@]}" --json |
           sed -n 's/.*"throughput_rps": \([0-9.]*\).*/\1/p')}
echo "## flux $PRESET, $STEPS steps, size ${SIZE} (0: the model's), max_batch_size $BATCH, $DURATION s per level, server flags: $*"
echo
if [ -n "${CAPACITY:-}" ]; then how="given by CAPACITY"; else how="closed loop, concurrency $((2 * BATCH))"; fi
echo "capacity ($how): $capacity req/s"
echo
echo "| load | rate req/s | sent | ok | throughput req/s | p50 latency s | p99 latency s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for load in 0.5 0.8 0.95; do
  rate=$(awk -v c="$capacity" -v l="$load" 'BEGIN {printf "%.4f", c * l}')
  out=$("${client[@]}" bench --rate "$rate" --duration "$DURATION" "${req[@]}" --json)
  echo "$out" | awk -v load="$load" -v rate="$rate" '{
    match($0, /"sent": [0-9]+/); sent = substr($0, RSTART + 8, RLENGTH - 8)
    match($0, /"ok": [0-9]+/); ok = substr($0, RSTART + 6, RLENGTH - 6)
    match($0, /"throughput_rps": [0-9.]+/); tp = substr($0, RSTART + 18, RLENGTH - 18)
    match($0, /"latency_ms": \{"p50": [0-9.]+/); p50 = substr($0, RSTART + 22, RLENGTH - 22)
    match($0, /"p99": [0-9.]+\}, "gang_ms"/); p99 = substr($0, RSTART + 7, RLENGTH - 19)
    printf "| %d %% | %s | %s | %s | %.3f | %.3f | %.3f |\n", load * 100, rate, sent, ok, tp, p50 / 1000, p99 / 1000
  }'
done
