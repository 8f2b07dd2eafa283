#!/bin/bash
# Stop 11's third device call (~9 min on one H200): head dim 64 against cuDNN (H=32), probes of
# what bounds the union pass at both head dims (PROBE=1: no keep word; PROBE=2: no per-entry
# epilogue either), the kernel profile at 16k, and the end-to-end GPT (backend="sus" against
# "inductor", 8k and 16k, losses).   OUT=/tmp/o bash benchmarks/run_stop11_e2e_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh e2e11
timeout 80 python3 benchmarks/attention.py --out "$D/d64" --n 16384,65536 --d 64 --causal 1 --c 8,32 --backends cudnn \
  > "$D/d64.log" 2>&1
stamp "d64 rc=$?"
timeout 50 python3 benchmarks/attention.py --out "$D/probe128" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune "PROBE=1;PROBE=2" > "$D/probe128.log" 2>&1
stamp "probe128 rc=$?"
timeout 50 python3 benchmarks/attention.py --out "$D/probe64" --n 16384 --d 64 --causal 1 --c 32 --backends cudnn \
  --tune "PROBE=1;PROBE=2" > "$D/probe64.log" 2>&1
stamp "probe64 rc=$?"
timeout 50 python3 benchmarks/profile_kernels.py --n 16384 > "$D/profile.md" 2>&1
stamp "profile rc=$?"
timeout 330 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --budget-s 290 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
tune_rows "$D"/probe*.log
grep -E "^\| (64|128) " "$D"/d64/attention.md "$D"/probe*/attention.md 2>/dev/null | grep -v "stats"
grep -E "us of kernels|union|sparse|expand|key_l1" "$D/profile.md" | head -12
sed -n '/## Step time/,/## Loss curves, T=8192/p' "$D/e2e/e2e_gpt.md" 2>/dev/null | head -12
grep -A4 "^| c | d (held-out)" "$D/e2e/e2e_gpt.md" 2>/dev/null
tail -3 "$D/e2e.log"
