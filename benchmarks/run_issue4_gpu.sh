#!/bin/bash
# Issue 4 on one GPU, in one device call: the kernel tests, the host-overhead table, the attention
# benchmarks (main sweep with CUDA-graph and compiled timings, config pick, FlexAttention; other
# head dims; where phase (a)'s time goes). Everything lands under $OUT/issue4; the tables print last.
#   OUT=/tmp/o bash benchmarks/run_issue4_gpu.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
D=${OUT:-/tmp/out}/issue4
mkdir -p "$D"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} > "$D/versions.txt" 2>&1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$D/progress.txt"; }

stamp tests
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_gpu.py > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
timeout 60 python3 benchmarks/overhead.py > "$D/overhead.md" 2>&1
stamp "overhead rc=$?"
timeout 250 python3 benchmarks/attention.py --out "$D/main" --n 1024,2048,4096,8192,16384,32768,65536 --d 128 \
  --causal 1 --c 8,16,32,64 --max-dense-n 16384 --graph --compiled-n 2048,16384 --flex-n 2048,16384 \
  --pick ";warps_a=8;stages_a=3;BN=128,warps_a=8,stages_a=3;UB=64;warps_b=8,SUB=1;BM=256,SUB=4,warps_a=8,U_cap=1024" \
  > "$D/main.log" 2>&1
stamp "main rc=$?"
timeout 60 python3 benchmarks/attention.py --out "$D/probe" --n 16384 --d 128 --causal 1 --c 32 --backends cudnn \
  --tune "PROBE=0;PROBE=1;PROBE=2" > "$D/probe.log" 2>&1
stamp "probe rc=$?"
timeout 120 python3 benchmarks/attention.py --out "$D/more" --n 4096,16384,65536 --d 64 --causal 1,0 --c 32 \
  --noncausal-max-n 16384 --extra-d 80,96,256 --extra-n 16384 --graph > "$D/more.log" 2>&1
stamp "more rc=$?"
tail -n 3 "$D/tests_gpu.log"
cat "$D/overhead.md" | head -20
for f in main probe more; do [ -f "$D/$f/attention.md" ] && cat "$D/$f/attention.md"; done
