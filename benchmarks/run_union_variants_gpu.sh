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
