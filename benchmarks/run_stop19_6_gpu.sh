#!/bin/bash
# Stop 19, call 6 (one H200): the short-length measurements behind min_length's default, again with
# more timed steps (call 3 timed 30; its inductor step at 2k had a p10-p90 of 15.6-24.6 ms).
# GPT-124M, batch 1, c=8, every site rewritten (min_length 0), 200 timed steps, at 2k and 4k.
#   OUT=/tmp/o bash benchmarks/run_stop19_6_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop19_6
timeout 250 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 2048,4096 --c 8 --steps 200 \
  --loss-steps 0 --profile-lengths 2048 --budget-s 240 --min-length 0 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
sed -n '/## Step time/,/## Loss curves/p' "$D/e2e/e2e_gpt.md" 2>/dev/null | grep -E "^\| [0-9]+ \|" || tail -5 "$D/e2e.log"
grep -E "^## Profile|^\| (SUS|attention|matmul|Inductor|optim|other)" "$D/e2e/e2e_gpt.md" 2>/dev/null | head -20
pack stop19_6
