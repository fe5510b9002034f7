"""The planner's predicted 2-rank speedups of the small preset against the
ones bench/parallel_generation.sh measured (docs/benchmarks.md, "After the
CPU step work", 885a7fd). Usage: planner_vs_measured.py PROFILE MODEL_DIR
(ditserve-plan from $PLAN, default build/bin/ditserve-plan). Prints a
Markdown table; exits 1 when a prediction is off by more than 10 %."""
import json
import os
import subprocess
import sys

PLAN = os.environ.get("PLAN", "build/bin/ditserve-plan")
MEASURED = {"u2": 1.78, "r2": 1.81, "pp2": 1.76, "cfg2": 1.94, "dp2": 1.95}


def plan(profile, model, gpus, *extra):
    out = subprocess.run([PLAN, "--model", model, "--gpus", str(gpus), "--hardware", profile, "--height", "512",
                          "--width", "512", "--num_inference_steps", "20", "--json", *extra],
                         capture_output=True, text=True, check=False)
    if out.returncode not in (0, 1):
        sys.exit(f"ditserve-plan failed: {out.stderr.strip()}")
    return {c["configuration"]: c for c in json.loads(out.stdout)["configurations"] if c["valid"]}


def main():
    profile, model = sys.argv[1], sys.argv[2]
    single = plan(profile, model, 1, "--cfg", "false")["serial"]
    pair = plan(profile, model, 2, "--cfg", "false")
    single_cfg = plan(profile, model, 1, "--cfg", "true")["serial"]
    pair_cfg = plan(profile, model, 2, "--cfg", "true")
    single_two = plan(profile, model, 1, "--cfg", "false", "--images", "2")["serial"]
    pair_two = plan(profile, model, 2, "--cfg", "false", "--images", "2")
    print(f"serial: predicted {single['step_seconds']:.3f} s per step\n")
    print("| method | predicted speedup | measured | error |\n|---|---:|---:|---:|")
    worst = 0.0
    for name, base, runs in [("u2", single, pair), ("r2", single, pair), ("pp2", single, pair),
                             ("cfg2", single_cfg, pair_cfg), ("dp2", single_two, pair_two)]:
        predicted = base["denoise_seconds"] / runs[name]["denoise_seconds"]
        error = predicted / MEASURED[name] - 1
        worst = max(worst, abs(error))
        print(f"| {name} | {predicted:.2f}x | {MEASURED[name]:.2f}x | {100 * error:+.1f}% |")
    print(f"\nlargest error {100 * worst:.1f}% (target 10%)")
    sys.exit(0 if worst <= 0.10 else 1)


if __name__ == "__main__":
    main()
