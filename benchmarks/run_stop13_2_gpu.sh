#!/bin/bash
# Stop 13's second device call (one H200): the host cost of the backward launch by launch at 2k
# (benchmarks/overhead_pieces.py: the Gluon path cost 0.45 ms more than the Triton one in call 1),
# and the end-to-end GPT (backend="sus" against "inductor", 8k and 16k, losses) with stop 12's
# kernels and the union expansion at WC=32.
#   OUT=/tmp/o bash benchmarks/run_stop13_2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop13_2
timeout 90 python3 benchmarks/overhead_pieces.py > "$D/overhead_pieces.txt" 2>&1
stamp "pieces rc=$?"
grep -E "^\|" "$D/overhead_pieces.txt"
grep -A45 "cumulative time" "$D/overhead_pieces.txt" | cut -c1-150 | head -50
timeout 400 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --budget-s 360 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
sed -n '/## Step time/,/## Loss curves, T=8192/p' "$D/e2e/e2e_gpt.md" 2>/dev/null | head -12
grep -A4 "^| c | d (held-out)" "$D/e2e/e2e_gpt.md" 2>/dev/null
tail -3 "$D/e2e.log"
pack stop13_2
