#!/bin/bash
# Stop 13's third device call (one H200): the Gluon union with -lse2 / a folded into its MMA (FOLD:
# one k16 wgmma more per tile, the per-entry FFMA gone; SASS of the unmasked loop 522 -> 401
# instructions per two tiles at D=128, 506 -> 384 at D=64). Predicted (instruction-bound, MMA
# +1/8 at D=128, +1/4 at D=64): union kernel 16k D=128 ~974 -> ~850 us; D=64 union ~1.52 -> ~1.2 ms.
# Its GPU tests (union completeness with peaky scores, agreement with the Triton union), the 16k
# variants side by side, then the target rows with the faster variant per head dim (--pick).
#   OUT=/tmp/o bash benchmarks/run_stop13_3_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop13_3
sm90_tests 150 "sm90 or misses_no_kept"
grep -E "passed|failed|Error" "$D/tests_sm90.log" | tail -5
tune16k 128 70 ";FOLD=1"
tune16k 64 60 ";FOLD=1"
tune_rows "$D"/tune*.log
timeout 160 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph --pick ";FOLD=1" > "$D/att.log" 2>&1
stamp "attention rc=$?"
timeout 70 python3 benchmarks/attention.py --out "$D/d64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  --pick ";FOLD=1" > "$D/d64.log" 2>&1
stamp "d64 rc=$?"
grep picked "$D/att.log" "$D/d64.log"
cat "$D/att/attention.md" 2>/dev/null | grep -E "^\| 128" || tail -20 "$D/att.log"
grep -E "^\| 64 " "$D/d64/attention.md" 2>/dev/null
pack stop13_3
