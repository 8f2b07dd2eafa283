#!/bin/bash
# Stop 17, call 1 (one H200). sus::attention_forward, sus::attention_backward and sus::union_sm90 are
# now defined with torch.library's define + impl instead of custom_op (stop 16 put ~0.3 ms of host
# time per layer in custom_op's layers on these hosts). Here: where the host time of the pieces goes
# now (overhead_pieces.py: the layers, the forward op, the union op, a launch without Triton's
# binder); the GPU tests the registration touches; the 8k step's wall vs host launch time.
#   OUT=/tmp/o bash benchmarks/run_stop17_1_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop17_1
pieces 90
timeout 150 python3 benchmarks/step_jitter.py --T 8192 --c 8 --steps 20 --out "$D/jitter" > "$D/jitter.log" 2>&1
stamp "jitter rc=$?"
grep -E "wall median" "$D/jitter.log"
sm90_tests 240 "union or compiled or stats or graph or replay or eager or host" tests/test_cuda_graphs_gpu.py
pack stop17_1
