#!/bin/bash
# Stop 11's fourth device call (~7 min on one H200; results benchmarks/results/h200_stop11_4_*): paired
# union blocks (PAIR=2, then the default) against one block per program at 16k, the union pass's MMA-and-loads skeleton under PAIR
# (PROBE=2), the kernel tests, the target rows against cuDNN, and the end-to-end GPT's step
# times (no loss curves: call 3 ran those). Everything is packed into $OUT/stop11_pair.tgz.
# It ran at commit 46b6d66 (the PAIR knob); PAIR lost and was reverted, so PAIR= in the specs is
# ignored now.   OUT=/tmp/o bash benchmarks/run_stop11_pair_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh pair11
timeout 60 python3 benchmarks/attention.py --out "$D/tune128" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune ";PAIR=1,stages_a=3;PAIR=2,stages_a=3;PROBE=2;PROBE=2,PAIR=1,stages_a=3" > "$D/tune128.log" 2>&1
stamp "tune128 rc=$?"
timeout 50 python3 benchmarks/attention.py --out "$D/tune64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  --tune ";PAIR=1;PAIR=2,stages_a=3;PROBE=2" > "$D/tune64.log" 2>&1
stamp "tune64 rc=$?"
timeout 260 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
timeout 60 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
timeout 35 python3 benchmarks/attention.py --out "$D/d64" --n 16384,65536 --d 64 --causal 1 --c 32 --backends cudnn \
  > "$D/d64.log" 2>&1
stamp "d64 rc=$?"
timeout 110 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 16384 --loss-steps 0 --steps 20 --profile-lengths 0 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
tail -n 3 "$D/tests_gpu.log"
tune_rows "$D"/tune*.log
grep -E "^\| (64|128) " "$D"/att/attention.md "$D"/d64/attention.md 2>/dev/null | grep -v stats | cut -d: -f2
grep -E "^\| (8192|16384) " "$D/e2e/e2e_gpt.md" 2>/dev/null
tar czf "$OUT/stop11_pair.tgz" -C "$D" . && rm -rf "$D"
