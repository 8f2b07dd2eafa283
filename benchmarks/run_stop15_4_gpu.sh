#!/bin/bash
# Stop 15's fourth device call (one H200): GPT-124M end to end at 8k and 16k, c = 8 and 32, with the
# backend change of stop 14 (joint-graph pass kept, fused-attention patterns hidden) and the union
# expansion folded into the Gluon union kernel.
#   OUT=/tmp/o bash benchmarks/run_stop15_4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop15_4
timeout 400 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 8192,16384 --c 8,32 --budget-s 340 \
  > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
e2e_summary
pack stop15_4
