#!/bin/bash
# Stop 16, call 6 (one H200): is the sus step's extra host time (call 5: +11 ms over inductor at 8k,
# most of it as "own time" of torch's custom-op wrappers in cProfile) Python's garbage collector?
# step_jitter.py records GC pauses per step, then repeats the steps after gc.freeze().
#   OUT=/tmp/o bash benchmarks/run_stop16_6_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop16_6
timeout 200 python3 benchmarks/step_jitter.py --T 8192 --c 8 --steps 20 --gc-freeze --out "$D/jitter" \
  > "$D/jitter.log" 2>&1
stamp "jitter rc=$?"
grep -E "wall median|host launch|GC pauses|timed  wall" "$D/jitter.log"
pack stop16_6
