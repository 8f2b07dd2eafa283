#!/bin/bash
# Stop 14's second device call (one H200). Call 1 found the GPT-shaped head-dim-64 row (H=12, packed
# q/k/v views, q scaled by 3) at 0.40x of cuDNN: phase (b) took 7.1 ms. Suspected: the 128-row
# blocks' unions overflow their capacity (16 c) and fall back to all causal columns. Here: the union
# statistics at q scales 1, 2, 3, and larger capacities (U_cap) against the fallback; the target
# case (D=128, H=16, random) with a larger U_cap, to see it costs nothing there; the union tests
# with the tile capacity now capped at the number of key tiles.
#   OUT=/tmp/o bash benchmarks/run_stop14_2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop14_2
for qs in 1 2 3; do
  timeout 120 python3 benchmarks/attention.py --out "$D/gpt_q$qs" --d 64 --heads 12 --layout packed --qscale $qs \
    --n 16384 --causal 1 --c 32 --backends cudnn --stats --tune ";U_cap=1024;U_cap=2048;U_cap=4096" > "$D/gpt_q$qs.log" 2>&1
  stamp "gpt-shaped qscale=$qs rc=$?"
  grep -E "^\| 64" "$D/gpt_q$qs/attention.md" 2>/dev/null | head -2
  grep -h "union_mean_over_c" "$D/gpt_q$qs.log" | cut -c1-260
  tune_rows "$D/gpt_q$qs.log"
done
(cd "$OUT" && tar czf stop14_2a.tgz "$(basename "$D")")
tune16k 128 120 ";U_cap=2048"
tune_rows "$D/tune128.log"
sm90_tests 150 "sm90 or misses_no_kept or overflow or unbiased"
pack stop14_2
