#!/bin/bash
# Stop 16, call 4 (one H200): sus_fx.stats() under a strict compile on CUDA (fixed after call 2's
# trace); step_jitter.py at 8k, c = 8 (are the slow stretches GPU work or host time?); the attention
# benchmark at the new union capacity (128 c): time and peak memory against stop 15's.
#   OUT=/tmp/o bash benchmarks/run_stop16_4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop16_4
timeout 60 python3 benchmarks/debug_stats_compiled.py > "$D/debug_stats.log" 2>&1
stamp "debug stats rc=$?"
tail -n 4 "$D/debug_stats.log"
timeout 240 python3 benchmarks/step_jitter.py --T 8192 --c 8 --steps 40 --out "$D/jitter" > "$D/jitter.log" 2>&1
stamp "jitter rc=$?"
grep -v "USDT\|^\s*$" "$D/jitter.log" | tail -24
(cd "$OUT" && tar czf stop16_4a.tgz "$(basename "$D")")
timeout 110 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
grep -E "^\| 128" "$D/att/attention.md" 2>/dev/null || tail -5 "$D/att.log"
pack stop16_4
