#!/bin/bash
# Stop 17, call 3 (one H200). Two more host-time cuts since call 2: the union op launches the cached
# CompiledKernel without Triton's binder (call 2: 67 -> 23 us per launch), and compiled forward
# graphs call sus::attention_forward_graph, the forward op without its Python autograd layer
# (call 2: the op 106 us against its impl's 58). Here: the GPU tests they touch, the host-time
# pieces, GPT-124M at 8k (c = 8, 32: step time against inductor, held-out losses) and the 8k step's
# wall against host launch time.
#   OUT=/tmp/o bash benchmarks/run_stop17_3_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop17_3
sm90_tests 230 "union or compiled or stats or graph or replay or eager or host" tests/test_cuda_graphs_gpu.py
pieces 60
timeout 170 python3 benchmarks/e2e_gpt.py --out "$D/e2e8k" --lengths 8192 --c 8,32 --steps 40 \
  --loss-steps 200 --profile-lengths 0 --budget-s 160 > "$D/e2e8k.log" 2>&1
stamp "e2e 8k rc=$?"
grep -h "^| 8192 \|within noise" "$D/e2e8k/e2e_gpt.md"
grep -h -A6 "^| run | order | to " "$D/e2e8k/e2e_gpt.md" | grep -E "^\| (inductor|sus)"
timeout 90 python3 benchmarks/step_jitter.py --T 8192 --c 8 --steps 20 --out "$D/jitter" > "$D/jitter.log" 2>&1
stamp "jitter rc=$?"
grep -E "wall median|host launch" "$D/jitter.log"
pack stop17_3
