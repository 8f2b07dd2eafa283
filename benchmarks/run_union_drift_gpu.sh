#!/bin/bash
# Stop 16, call 1 (written in stop 15; run with the GPT's rotary tables of stop 16): why GPT-124M at 8k with c=32 stepped
# at ~29 ms for its first ~10 timed steps and at 35-37.5 ms after (h200_stop15_4_e2e_gpt.md), while
# c=8 and inductor held steady. Two candidates, both recorded here:
#  - the unions grow as the model learns (CPU: 2.5-3.6x over 40 steps at c=32,
#    experiments/variance/union_growth.md): --union-stats records sus_fx.stats() in one untimed step
#    before and one after the timed steps;
#  - the card's clocks or power: nvidia-smi sampled every 500 ms alongside;
# and the loss runs (200 steps) report ms per step by 20-step window, so the drift is seen over training.
# Then phase (b) on 64-row blocks with their own unions (the Triton union: the Gluon one is 128-row
# only) on the GPT-shaped peaky rows, against the shipped 128-row path: on the trained KJV GPT a
# 64-row block's union is 28-35% smaller per row (experiments/variance/union_block_rows.md).
#   OUT=/tmp/o bash benchmarks/run_union_drift_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh union_drift
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
  --format=csv -lms 500 > "$D/smi.csv" 2>&1 &
SMI=$!
timeout 400 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 8192 --c 8,32 --steps 60 --union-stats \
  --loss-steps 200 --eval-every 20 --profile-lengths 0 --budget-s 330 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
kill $SMI
e2e_summary
(cd "$OUT" && tar czf union_drift_a.tgz "$(basename "$D")")  # the rows above survive a timeout below
for qs in 2 3; do
  timeout 80 python3 benchmarks/attention.py --out "$D/rows_q$qs" --d 64 --heads 12 --layout packed --qscale $qs \
    --n 16384 --causal 1 --c 8,32 --backends cudnn --tune ";SM90=0;SM90=0,BM=64,UB=32,warps_b=4;SM90=0,BM=64,UB=64" \
    > "$D/rows_q$qs.log" 2>&1
  stamp "block rows q x $qs rc=$?"
  tune_rows "$D/rows_q$qs.log"
done
pack union_drift
