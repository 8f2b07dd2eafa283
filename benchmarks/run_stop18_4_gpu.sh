#!/bin/bash
# Stop 18, call 4 (one H200): three CTAs per SM for the Gluon union at head dim 64. With ptxas held
# to 168 registers (MAXNREG=168) the PAIR kernel's main loop does not spill (offline SASS: 350
# instructions per two tiles, no local loads or stores; the expansion at the end does spill), and at
# 16k its shared memory (~74 KB) lets three CTAs share an SM. Predicted: if the union is latency
# bound at two CTAs (stop 12's ncu), the third CTA's MMAs fill gaps: -5..-15% on the union; if the
# tensor pipe or the spills bind, nothing. Here: the union tests (MAXNREG=168 must give the same
# unions), the variants on GPT-shaped rows (attention.py --tune, one process), GPT-124M at 16k with
# and without MAXNREG=168.
#   OUT=/tmp/o bash benchmarks/run_stop18_4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop18_4
snap() { (cd "$OUT" && tar czf stop18_4.tgz "$(basename "$D")"); }
timeout 80 python3 benchmarks/attention.py --out "$D/tune" --n 16384 --d 64 --heads 12 --layout packed --qscale 2 \
  --causal 1 --c 8 --backends cudnn \
  --tune ";MAXNREG=168;PAIR=0;PAIR=0,MAXNREG=168" > "$D/tune.log" 2>&1
stamp "tune gpt rows rc=$?"
tune_rows "$D/tune.log"
timeout 60 python3 benchmarks/attention.py --out "$D/tune32" --n 16384 --d 64 --heads 32 --causal 1 --c 32 \
  --backends cudnn --tune ";MAXNREG=168;PAIR=0" > "$D/tune32.log" 2>&1
stamp "tune H=32 rc=$?"
tune_rows "$D/tune32.log"
snap
sm90_tests 120 "pairs_match or sm90_union_matches"
snap
for cfg in "" "MAXNREG=168"; do
  tag=${cfg:-default}
  timeout 110 python3 benchmarks/e2e_gpt.py --out "$D/e2e16k_$tag" --lengths 16384 --c 8 --steps 30 \
    --loss-steps 0 --profile-lengths 16384 --budget-s 100 ${cfg:+--kernel-cfg $cfg} > "$D/e2e16k_$tag.log" 2>&1
  stamp "e2e 16k $tag rc=$?"
  grep -h "^| 16384 " "$D/e2e16k_$tag/e2e_gpt.md"; grep -h "union_kernel_sm90" "$D/e2e16k_$tag/e2e_gpt.md"
done
rm -f "$OUT/stop18_4.tgz"
pack stop18_4
