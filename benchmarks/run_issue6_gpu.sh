#!/usr/bin/env bash
# Issue 6 ("Reliability"), the parts that need GPUs. One command on the 2-GPU machine:
#
#     OUT=/path/to/out bash benchmarks/run_issue6_gpu.sh        # $OUT defaults to ./out_issue6
#
# Writes under $OUT: env.log, test_distributed.log (CPU/gloo DDP + FSDP2 tests), cuda_graphs.log
# (tests/test_cuda_graphs_gpu.py), distributed_gpu.log + distributed.json + distributed.md
# (torchrun DDP / FSDP2 / per-rank masks on 2 GPUs), summary.txt. Exit status: the number of
# failed parts (0 = all passed). Every part has its own timeout; the whole stays under ~5 min:
# the CPU test runs in the background while the CUDA-graph tests use GPU 0, then torchrun.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out_issue6}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
T0=$(date +%s)

{
  date; hostname; nvidia-smi -L || true
  $PY -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda devices', torch.cuda.device_count())"
  $PY -c "import torch._dynamo as d; d.lookup_backend('sus'); print('backend sus: registered (entry point)')" 2>/dev/null \
    || echo "backend sus: no entry point (package not installed); the scripts register it by hand"
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

# 1 (background, CPU only): gloo DDP + FSDP2 tests, ~1 min
( timeout 150 $PY -m pytest -q -rA tests/test_distributed.py < /dev/null > "$OUT/test_distributed.log" 2>&1; echo $? > "$OUT/.rc_dist" ) &
BG=$!

# 2: CUDA graphs (mode="reduce-overhead") tests on GPU 0, ~1-1.5 min (3 compiles, 2 in subprocesses)
CUDA_VISIBLE_DEVICES=0 timeout 170 $PY -m pytest -q -rA -s tests/test_cuda_graphs_gpu.py < /dev/null > "$OUT/cuda_graphs.log" 2>&1
RC_CG=$?
wait $BG
RC_DIST=$(cat "$OUT/.rc_dist" 2>/dev/null || echo 99); rm -f "$OUT/.rc_dist"

# 3: torchrun on both GPUs, ~2-3 min (most of it Inductor compiles)
timeout 210 torchrun --standalone --nproc_per_node=2 benchmarks/distributed_gpu.py --out "$OUT" < /dev/null \
  > "$OUT/distributed_gpu.log" 2>&1
RC_TR=$?

fails=0
{
  for pair in "test_distributed.py:$RC_DIST" "test_cuda_graphs_gpu.py:$RC_CG" "distributed_gpu.py (torchrun):$RC_TR"; do
    name=${pair%:*}; rc=${pair##*:}
    case $rc in 0) s=PASS ;; 124|137) s="TIMEOUT (rc $rc)" ;; *) s="FAIL (rc $rc)" ;; esac
    [ "$rc" = 0 ] || fails=$((fails + 1))
    echo "$name: $s"
  done
  echo "--- pytest summaries"
  grep -hE "^(PASSED|FAILED|ERROR|SKIPPED|XFAIL)|passed|failed" "$OUT/test_distributed.log" "$OUT/cuda_graphs.log" | tail -30
  echo "--- host-sync paths under CUDA graphs"
  grep -h "outcome\|\"error\"\|child exit" "$OUT/cuda_graphs.log" | head -20
  echo "--- torchrun table"
  [ -f "$OUT/distributed.md" ] && cat "$OUT/distributed.md" || tail -40 "$OUT/distributed_gpu.log"
  echo "total $(( $(date +%s) - T0 )) s"
} > "$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"
exit $fails
