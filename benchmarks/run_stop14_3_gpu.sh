#!/bin/bash
# Stop 14's third device call (one H200), at this stop's code (union capacity 64c, tile slots capped
# at the key tiles, seeds drawn after the forward launch, union statistics in sus_fx.stats()): the
# target rows against cuDNN (head dims 128 and 64, peak memory with the new capacities), the
# GPT-shaped row at q x 2 with the shipped defaults, then the GPU test suite.
#   OUT=/tmp/o bash benchmarks/run_stop14_3_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop14_3
timeout 110 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
grep -E "^\| 128" "$D/att/attention.md" 2>/dev/null || tail -5 "$D/att.log"
timeout 40 python3 benchmarks/attention.py --out "$D/d64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  > "$D/d64.log" 2>&1
stamp "d64 rc=$?"
grep -E "^\| 64 " "$D/d64/attention.md" 2>/dev/null
timeout 40 python3 benchmarks/attention.py --out "$D/gpt" --d 64 --heads 12 --layout packed --qscale 2 \
  --n 16384 --causal 1 --c 32 --backends cudnn --stats > "$D/gpt.log" 2>&1
stamp "gpt-shaped rc=$?"
grep -E "^\| 64 " "$D/gpt/attention.md" 2>/dev/null | head -2; grep -h "union_mean" "$D/gpt.log" | cut -c1-200
(cd "$OUT" && tar czf stop14_3a.tgz "$(basename "$D")")  # the rows above survive a timeout below
timeout 390 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py tests/test_cuda_graphs_gpu.py \
  > "$D/tests_gpu.log" 2>&1
stamp "gpu tests rc=$?"
tail -n 4 "$D/tests_gpu.log"
pack stop14_3
