#!/bin/bash
# Stop 18, call 3 (one H200): PAIR with its words stored as one int32 per warp and pair (call 2's
# gl.join made MLIR print an "error:" line at compile time; the kernel itself was correct), expanded
# by _expand_pair_words. Offline: 4 barriers and 343 instructions per two tiles, no diagnostics.
# Predicted: call 2's A/B again (d64 -6%, gpt_q2 -4% against c080ad1). Then GPT-124M at 8k and 16k,
# c = 8, with the held-out loss runs: this stop's end-to-end numbers.
#   bash benchmarks/ab_old.sh c080ad1 && OUT=/tmp/o bash benchmarks/run_stop18_3_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop18_3
snap() { (cd "$OUT" && tar czf stop18_3.tgz "$(basename "$D")"); }
sm90_tests 140 "sm90 or union_misses"
timeout 70 python3 benchmarks/ab_kernels.py --cases d64,gpt_q2 --rounds 3 > "$D/ab.log" 2>&1
stamp "ab vs c080ad1 rc=$?"
grep -E "^\| |error" "$D/ab.log" | tail -5
snap
timeout 175 python3 benchmarks/e2e_gpt.py --out "$D/e2e8k" --lengths 8192 --c 8 --steps 30 \
  --loss-steps 200 --profile-lengths 8192 --budget-s 165 > "$D/e2e8k.log" 2>&1
stamp "e2e 8k rc=$?"
grep -h "^| 8192 \|within noise" "$D/e2e8k/e2e_gpt.md"
snap
timeout 165 python3 benchmarks/e2e_gpt.py --out "$D/e2e16k" --lengths 16384 --c 8 --steps 30 \
  --loss-steps 100 --profile-lengths 0 --budget-s 155 > "$D/e2e16k.log" 2>&1
stamp "e2e 16k rc=$?"
grep -h "^| 16384 \|within noise" "$D/e2e16k/e2e_gpt.md"
rm -f "$OUT/stop18_3.tgz"
pack stop18_3
