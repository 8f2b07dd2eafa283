#!/bin/bash
# Ran at commit 25ec16e (stop 12, call 6); results in benchmarks/results/: h200_stop12_6_*.
# Stop 12's sixth device call (one H200): the code on main with the Gluon union pass as the default
# on sm_90 (head dims 64 and 128): every GPU kernel test, then the target rows against cuDNN (2k,
# 16k, 64k at D = 128 with CUDA-graph replay; 16k at D = 64), then the kernel profile at 16k.
#   OUT=/tmp/o bash benchmarks/run_stop12_check_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop12_6
timeout 300 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py tests/test_cuda_graphs_gpu.py \
  > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
tail -n 4 "$D/tests_gpu.log"
timeout 130 python3 benchmarks/attention.py --out "$D/att" --n 2048,16384,65536 --d 128 --causal 1 \
  --c 8,32 --backends cudnn --graph > "$D/att.log" 2>&1
stamp "attention rc=$?"
timeout 60 python3 benchmarks/attention.py --out "$D/d64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  > "$D/d64.log" 2>&1
stamp "d64 rc=$?"
timeout 50 python3 benchmarks/profile_kernels.py --n 16384 > "$D/profile.md" 2>&1
stamp "profile rc=$?"
cat "$D/att/attention.md" 2>/dev/null || tail -20 "$D/att.log"
grep -E "^\| 64 " "$D/d64/attention.md" 2>/dev/null
grep -E "us of kernels|union|sparse|expand|key_l1|block_keys" "$D/profile.md" | head -12
pack stop12_6
