#!/usr/bin/env bash
# HunyuanDiT on CPU, small preset: bench/family_cpu.sh with FAMILY=hunyuandit
# (one rank against diffusers' HunyuanDiTPipeline without resolution
# binning, then 2 ranks against 1 for cfg 2, ulysses 2 and pipefusion 2).
#
#   bench/hunyuandit_cpu.sh                    # after scripts/build
#   STEPS=8 ROUNDS=3 SIZE=512 bench/hunyuandit_cpu.sh
FAMILY=hunyuandit exec "$(dirname "$0")/family_cpu.sh" "$@"
