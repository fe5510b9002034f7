#!/usr/bin/env bash
# Stable Diffusion 3 on CPU, small preset: bench/family_cpu.sh with FAMILY=sd3
# (one rank against diffusers' StableDiffusion3Pipeline, then 2 ranks
# against 1 for cfg 2, ulysses 2 and pipefusion 2).
#
#   bench/sd3_cpu.sh                       # after scripts/build
#   VARIANT=sd3.5-medium STEPS=8 ROUNDS=3 SIZE=512 bench/sd3_cpu.sh
FAMILY=sd3 exec "$(dirname "$0")/family_cpu.sh" "$@"
