# Sourced by the device scripts (run_issue4_gpu.sh, run_gpu_check.sh, run_stop11_*gpu.sh) from the
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
