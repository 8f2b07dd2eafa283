#!/bin/bash
# Stop 13's sixth device call (one H200), this stop's kernels as they land: the Gluon-vs-Triton
# union agreement test with FOLD's criterion fixed (call 5 failed it on blocks that overflow to the
# all-columns path, which the new assertion had not allowed for), the target rows against cuDNN
# (head dims 128 and 64), the host cost pieces at 2k, and the end-to-end GPT at 16k.
#   OUT=/tmp/o bash benchmarks/run_stop13_6_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop13_6
timeout 80 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py -k "sm90_union_matches" \
  > "$D/tests_sm90.log" 2>&1
stamp "tests rc=$?"
tail -n 3 "$D/tests_sm90.log"
timeout 80 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
timeout 40 python3 benchmarks/attention.py --out "$D/d64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  > "$D/d64.log" 2>&1
stamp "d64 rc=$?"
grep -E "^\| 128" "$D/att/attention.md" 2>/dev/null || tail -5 "$D/att.log"
grep -E "^\| 64 " "$D/d64/attention.md" 2>/dev/null
timeout 30 python3 benchmarks/overhead_pieces.py > "$D/overhead_pieces.txt" 2>&1
stamp "pieces rc=$?"
grep -E "^\| sus_backward|^\| union_sm90_impl" "$D/overhead_pieces.txt"
(cd "$OUT" && tar czf stop13_6a.tgz "$(basename "$D")")  # the rows above survive a timeout below
timeout 200 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 16384 --budget-s 150 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
e2e_summary
pack stop13_6
