# Sourced by the device scripts (run_issue4_gpu.sh, run_gpu_check.sh, run_stop1[12]_*gpu.sh) from the
# repository root:
#   . benchmarks/gpu_run_setup.sh NAME
# sets PYTHONPATH to the checkout, D=$OUT/NAME (created; $OUT defaults to /tmp/out), writes the
# card and versions to $D/versions.txt, and defines `stamp MSG` (elapsed seconds + MSG, also
# appended to $D/progress.txt) and `tune_rows LOG...` (below).
export PYTHONPATH=$PWD
D=${OUT:-/tmp/out}/$1
mkdir -p "$D"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} > "$D/versions.txt" 2>&1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$D/progress.txt"; }
# `tune_rows LOG...`: one line per `attention.py --tune` row in the logs (head dim, n, variant,
# backward, phase (a) = L1 norms + union + expansion, the rest).
tune_rows() {
  grep -h '"method": "tune' "$@" | python3 -c "
import sys, json
for l in sys.stdin:
    r = json.loads(l); print(r['D'], r['n'], r['method'], 'bwd %.3f union %.3f rest %.3f' % (r['bwd'], r['phase_a'], r['phase_b']))"
}
# The steps stop 12's device scripts share (run_stop12_*gpu.sh):
# `sm90_tests TIMEOUT KEXPR [PYTEST_ARGS...]`: tests/test_kernels_gpu.py -k KEXPR into $D/tests_sm90.log.
sm90_tests() {
  local t=$1 k=$2; shift 2
  timeout "$t" python3 -m pytest -q -p no:cacheprovider -rfE "$@" tests/test_kernels_gpu.py -k "$k" \
    > "$D/tests_sm90.log" 2>&1
  stamp "sm90 tests rc=$?"
  tail -n 3 "$D/tests_sm90.log"
}
# `tune16k HEAD_DIM TIMEOUT SPECS`: attention.py --tune SPECS at n=16k, causal, c=32 into $D/tune$HEAD_DIM.log.
tune16k() {
  timeout "$2" python3 benchmarks/attention.py --out "$D/tune$1" --n 16384 --d "$1" --causal 1 --c 32 \
    --backends cudnn --tune "$3" > "$D/tune$1.log" 2>&1
  stamp "tune$1 rc=$?"
}
# `ncu_union TIMEOUT KERNEL_REGEX SM90_VARIANTS NCU_ARGS...`: benchmarks/ncu_union.py (16k, D=128) under
# Nsight Compute into $D/ncu128.txt.
ncu_union() {
  local t=$1 k=$2 v=$3 ncu; shift 3
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  timeout "$t" $ncu --profile-from-start off --clock-control none -k "regex:$k" "$@" \
    python3 benchmarks/ncu_union.py --n 16384 --d 128 --variants "$v" > "$D/ncu128.txt" 2>&1
  stamp "ncu rc=$?"
}
# `pieces TIMEOUT`: benchmarks/overhead_pieces.py (host time per piece, n = 2k) into $D/pieces.log; its table.
pieces() {
  timeout "$1" python3 benchmarks/overhead_pieces.py --n 2048 > "$D/pieces.log" 2>&1
  stamp "pieces rc=$?"
  grep -E "^\|" "$D/pieces.log" | head -40
}
# `pack NAME`: $D into $OUT/NAME.tgz, the folder removed (the device returns at most 8 files).
pack() {
  cd "$OUT" && tar czf "$1.tgz" "$(basename "$D")" && rm -rf "$(basename "$D")"
}
# `e2e_summary`: the lines of $D/e2e (benchmarks/e2e_gpt.py --out "$D/e2e") worth printing last: the
# step-time rows, the held-out loss verdicts, the ms per step by window of the loss runs, the profile's
# categories, the end of its log.
e2e_summary() {
  sed -n '/## Step time/,/## Loss curves/p' "$D/e2e/e2e_gpt.md" 2>/dev/null | grep -E "^\| [0-9]+ \|"
  grep -A4 "^| c | d (held-out)" "$D/e2e/e2e_gpt.md" 2>/dev/null | grep -E "^\| [0-9.]+ \|"
  grep -h -A6 "^| run | order | to " "$D/e2e/e2e_gpt.md" 2>/dev/null | grep -E "^\| (inductor|sus)"
  grep -E "^\| (SUS|attention|matmul|Inductor|other)" "$D/e2e/e2e_gpt.md" 2>/dev/null | tail -8
  tail -3 "$D/e2e.log"
}
