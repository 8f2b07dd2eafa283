#!/bin/bash
# The device call of stop 10 that timed the union pass's expansion and zeroing variants side by
# side (results: benchmarks/results/h200_stop10_3_*), then reran the GPU tests. It ran at commit
# 07416c2, where sus_bwd's config had the knobs expand=0/1 (separate kernel / end of the union kernel),
# zero=0/1/2 (torch.zeros / end / start of the union kernel) and WC. The winner (separate
# expansion, WC=64, zeroing at the start) is now the only path; config key zero=0 still selects
# torch.zeros.   OUT=/tmp/o bash benchmarks/run_union_variants_gpu.sh
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
D=$OUT/tune; mkdir -p $D
timeout 200 python3 benchmarks/attention.py --out $D --n 2048,16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune "expand=0,zero=0,WC=16;expand=0,zero=0,WC=64;expand=0,zero=2;expand=1,zero=0;expand=1,zero=1;expand=1,zero=2;expand=1,zero=0,WC=16" > $D/tune.log 2>&1
echo "tune rc=$?"
grep -h '"method": "tune' $D/tune.log | python3 -c "
import sys, json
for l in sys.stdin:
    r = json.loads(l); print(r['n'], r['method'], 'bwd %.3f a %.3f b %.3f' % (r['bwd'], r['phase_a'], r['phase_b']))"
timeout 330 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py tests/test_cuda_graphs_gpu.py > $D/tests_gpu.log 2>&1
echo "tests rc=$?"; tail -3 $D/tests_gpu.log
