#!/bin/bash
# Stop 16, call 2 (one H200). Call 1 (run_union_drift_gpu.sh) found: (1) sus_fx.stats() recorded no
# backward of the compiled GPT on the GPU (e2e --union-stats: 0 backwards); (2) the sus step time at
# 8k jumps between regimes (c=8: 24.4 ms for 11 steps, 37-40 ms for 7, then ~27) while inductor
# holds 29.5-30.3; (3) GPT-shaped q x 3 rows at c=8 take 6.5 ms in phase (b) at the union capacity
# 64 c = 512 (blocks over it take all columns), 0.34 ms with 64-row blocks.
# Here: a trace of the stats-variant mechanism on a small compiled module; the 8k steps with the
# union capacity raised to 4096 (if the regimes are blocks over the capacity, they go); 16k with the
# rotary tables.
#   OUT=/tmp/o bash benchmarks/run_stop16_2_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop16_2
timeout 120 python3 benchmarks/debug_stats_compiled.py > "$D/debug_stats.log" 2>&1
stamp "debug stats rc=$?"
tail -n 25 "$D/debug_stats.log"
timeout 200 python3 benchmarks/e2e_gpt.py --out "$D/e2e8k_cap" --lengths 8192 --c 8,32 --steps 60 \
  --kernel-cfg U_cap=4096 --loss-steps 0 --profile-lengths 0 --budget-s 190 > "$D/e2e8k_cap.log" 2>&1
stamp "e2e 8k U_cap=4096 rc=$?"
grep -h "^| 8192 " "$D/e2e8k_cap/e2e_gpt.md"
python3 -c "
import json; d=json.load(open('$D/e2e8k_cap/e2e_gpt.json'))
for r in d['configs']: print(r['backend'], r['c'], ' '.join('%.1f' % t for t in r.get('step_ms_all', [])))"
(cd "$OUT" && tar czf stop16_2_a.tgz "$(basename "$D")")
timeout 200 python3 benchmarks/e2e_gpt.py --out "$D/e2e16k" --lengths 16384 --c 8 --steps 30 \
  --loss-steps 0 --budget-s 190 > "$D/e2e16k.log" 2>&1
stamp "e2e 16k rc=$?"
grep -h "^| 16384 " "$D/e2e16k/e2e_gpt.md"
grep -E "^\| (SUS|attention|matmul|Inductor|optimizer|other)" "$D/e2e16k/e2e_gpt.md" | head -14
pack stop16_2
