#!/usr/bin/env bash
# PixArt-Σ on CPU, small preset: bench/family_cpu.sh with FAMILY=pixart-sigma
# (one rank against diffusers' PixArtSigmaPipeline with clean_caption=False,
# then 2 ranks against 1 for cfg 2, ulysses 2 and pipefusion 2).
#
#   bench/pixart_cpu.sh                    # after scripts/build
#   STEPS=8 ROUNDS=3 SIZE=512 bench/pixart_cpu.sh
FAMILY=pixart-sigma exec "$(dirname "$0")/family_cpu.sh" "$@"
