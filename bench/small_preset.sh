# Sourced by the small-preset benchmarks (after `cd` to the repository
# root): BIN, WORK and MODEL, each overridable from the environment, and the
# small preset written to MODEL unless it is there already.
BIN=${BIN:-build/bin}  # e.g. build-gpu/bin after scripts/gpu-check
WORK=${WORK:-build/bench/parallel_generation}
MODEL=${MODEL:-$WORK/flux-small}
mkdir -p "$WORK"
[ -f "$MODEL/model_index.json" ] || "$BIN/ditserve-make-model" --preset small --out "$MODEL" > "$WORK/make-model.log" 2>&1 || {
  echo "ditserve-make-model failed:" >&2; tail -5 "$WORK/make-model.log" >&2; exit 1; }
