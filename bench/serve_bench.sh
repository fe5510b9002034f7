#!/usr/bin/env bash
# Serving benchmark (docs/benchmarks.md): ditserve-server with a spawned
# CPU gang of one rank on the tiny model, then `ditserve-client bench` with
# 1-step requests at concurrency 1, 8 and 64.
#   bench/serve_bench.sh [REQUESTS_PER_LEVEL] [extra ditserve-server flags]
# e.g. bench/serve_bench.sh 200 --max_batch_size 4
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
MODEL=build/flux-tiny
LOG=build/serve-bench-server.log
REQUESTS="${1:-200}"
shift || true
[ -f "$MODEL/model_index.json" ] || "$BIN/ditserve-make-model" --preset tiny --out "$MODEL" > build/make-model.log 2>&1
# No stale port: the server truncates the log only once it has started.
rm -f "$LOG"
"$BIN/ditserve-server" --model "$MODEL" --spawn_workers --device cpu --threads 1 --host 127.0.0.1 \
  --port 0 --metrics_port 0 --print_ports --max_queue_size 64 "$@" > "$LOG" 2>&1 &
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
"${client[@]}" --wait_ready_s 300 bench --concurrency 1 --requests 5 --num_inference_steps 1 --prompt warmup > /dev/null
for c in ${LEVELS:-1 8 64}; do
  echo "# ditserve-client bench --concurrency $c --requests $REQUESTS --num_inference_steps 1 --prompt 'a red circle'"
  "${client[@]}" bench --concurrency "$c" --requests "$REQUESTS" --num_inference_steps 1 \
    --prompt "a red circle" || true
done
