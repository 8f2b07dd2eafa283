#!/bin/bash
# Issue 4 on one GPU (~25 min; split it across device calls of 10 min): the GPU tests, the
# host-overhead table, the attention benchmarks (D=128 sweep with CUDA-graph, compiled and
# FlexAttention timings; D=64), the kernel profile, the compiled-vs-direct kernel diagnosis and the
# end-to-end GPT. The stop-9 results in benchmarks/results/h200_* came from these commands, run in
# parallel on the two GPUs of an nvidia-h200-x2 machine. Everything lands under $OUT/issue4.
#   OUT=/tmp/o bash benchmarks/run_issue4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh issue4

stamp tests
timeout 330 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py tests/test_cuda_graphs_gpu.py > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
timeout 60 python3 benchmarks/overhead.py > "$D/overhead.md" 2>&1
stamp "overhead rc=$?"
timeout 260 python3 benchmarks/attention.py --out "$D/main" --n 1024,2048,4096,8192,16384,32768,65536 --d 128 \
  --causal 1 --c 8,16,32,64 --max-dense-n 16384 --graph --compiled-n 2048,16384 --flex-n 2048,16384 > "$D/main.log" 2>&1
stamp "main rc=$?"
timeout 100 python3 benchmarks/attention.py --out "$D/d64" --n 4096,16384,65536 --d 64 --causal 1,0 --c 32 \
  --noncausal-max-n 16384 --graph --compiled-n 16384 > "$D/d64.log" 2>&1
stamp "d64 rc=$?"
timeout 120 python3 benchmarks/profile_kernels.py --n 2048,16384 > "$D/profile.md" 2>&1
stamp "profile rc=$?"
timeout 130 python3 benchmarks/diagnose_e2e_bwd.py --train-steps 10 > "$D/diag.log" 2>&1
stamp "diag rc=$?"
timeout 400 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --budget-s 340 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
tail -n 3 "$D/tests_gpu.log"
for f in main d64; do [ -f "$D/$f/attention.md" ] && cat "$D/$f/attention.md"; done
cat "$D/profile.md" "$D/e2e/e2e_gpt.md" 2>/dev/null
