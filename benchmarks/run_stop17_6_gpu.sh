#!/bin/bash
# Stop 17, call 6 (one H200, the session's last device minutes): a cProfile of the sus step at 8k
# (c = 8) with this stop's host-time changes, to set beside stop 16's (h200_stop16_5_step_jitter_cprofile:
# custom_ops.backend_impl ~217 us and OpOverload.__call__ ~133 us of own time per call).
#   OUT=/tmp/o bash benchmarks/run_stop17_6_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop17_6
timeout 150 python3 benchmarks/step_jitter.py --T 8192 --c 8 --steps 6 --backends sus --cprofile 4 \
  --out "$D/jitter" > "$D/jitter.log" 2>&1
stamp "jitter rc=$?"
grep -E "wall median|host launch|function calls" "$D/jitter.log"
grep -A14 "Ordered by: internal time" "$D/jitter.log" | head -16 | cut -c1-150
pack stop17_6
