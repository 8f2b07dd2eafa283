#!/bin/bash
# Stop 19, call 8 (one H200): the Gluon union's non-PAIR expansion now counts a tile's columns with
# popc and places them with _place_tile_columns (PAIR's helpers) instead of its own copy of that
# code; its unions must still equal the Triton kernel's bit for bit.
#   OUT=/tmp/o bash benchmarks/run_stop19_8_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop19_8
sm90_tests 110 "sm90_union_matches"
pack stop19_8
