#!/bin/bash
# Stop 15's fourth device call (one H200): GPT-124M end to end at 8k and 16k, c = 8 and 32, with the
# backend change of stop 14 (joint-graph pass kept, fused-attention patterns hidden) and the union
# expansion folded into the Gluon union kernel. First the one GPU test call 3 failed on (it expected
# the expansion launch the Gluon union no longer needs; the test now counts three launches on sm_90).
#   OUT=/tmp/o bash benchmarks/run_stop15_4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop15_4
timeout 100 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py -k compiled_backward_traces \
  > "$D/tests_gpu.log" 2>&1
stamp "test rc=$?"
tail -n 2 "$D/tests_gpu.log"
timeout 360 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 8192,16384 --c 8,32 --budget-s 290 \
  > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
e2e_summary
pack stop15_4
