#!/bin/bash
# One device call after a kernel change (~6 min on one H200): the kernel tests, the kernel profile
# at 2k and 16k, and the target rows of the attention benchmark (causal, D=128, H=16) against
# cuDNN in the same run. Everything lands under $OUT/check; the last lines printed are the tables.
#   OUT=/tmp/o bash benchmarks/run_gpu_check.sh [extra attention.py args]
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh check
timeout ${TESTS_S:-240} python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py ${TESTS_EXTRA:-} > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
timeout 100 python3 benchmarks/profile_kernels.py --n 2048,16384 > "$D/profile.md" 2>&1
stamp "profile rc=$?"
timeout ${ATT_S:-200} python3 benchmarks/attention.py --out "$D/att" --n ${ATT_N:-2048,16384,65536} --d 128 --causal 1 \
  --c ${ATT_C:-8,32} --backends cudnn --graph --stats "$@" > "$D/att.log" 2>&1
stamp "attention rc=$?"
tail -n 4 "$D/tests_gpu.log"
grep -E "^## n=|us of kernels|union|sparse|expand" "$D/profile.md" | head -40
cat "$D/att/attention.md" 2>/dev/null || tail -20 "$D/att.log"
