#!/bin/bash
# Stop 11's second device call (~9 min on one H200): the target rows against cuDNN with the
# kept changes (per-tile hash instead of Philox, phase (b) at UB=64 / 8 warps / whole blocks),
# probes of what bounds the union pass (PROBE=1: no keep word; PROBE=2: no epilogue), head dim
# 64, then the kernel tests.   OUT=/tmp/o bash benchmarks/run_stop11_check_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh check11
timeout 120 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph --stats > "$D/att.log" 2>&1
stamp "attention rc=$?"
timeout 60 python3 benchmarks/attention.py --out "$D/probe128" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune ";PROBE=1;PROBE=2;stages_a=2;stages_a=4" > "$D/probe128.log" 2>&1
stamp "probe128 rc=$?"
timeout 90 python3 benchmarks/attention.py --out "$D/d64" --n 16384,65536 --d 64 --causal 1 --c 8,32 --backends cudnn \
  --tune ";PROBE=1;PROBE=2;stages_a=3" > "$D/d64.log" 2>&1
stamp "d64 rc=$?"
timeout 300 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
tail -n 4 "$D/tests_gpu.log"
tune_rows "$D"/*.log
cat "$D/att/attention.md" 2>/dev/null || tail -20 "$D/att.log"
grep -E "^\| 64 " "$D/d64/attention.md" 2>/dev/null
