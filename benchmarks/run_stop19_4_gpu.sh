#!/bin/bash
# Stop 19, call 4 (one H200): min_length. GPT-124M at 2k with the backend's default (auto: 4096 on
# CUDA, so no site is rewritten: expected ~1.0x against inductor, was 0.74x in call 3), and at 2k
# with CUDA graphs for both backends and min_length 0 (does SUS pay at 2k once the host is out?).
# Then the GPU tests that compile tiny models through the backend (conftest makes auto 0 for them)
# and the CUDA default's own test.
#   OUT=/tmp/o bash benchmarks/run_stop19_4_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop19_4
timeout 130 python3 benchmarks/e2e_gpt.py --out "$D/e2e_default" --lengths 2048 --c 8 --steps 30 \
  --loss-steps 0 --profile-lengths 0 --budget-s 120 > "$D/e2e_default.log" 2>&1
stamp "e2e 2k default rc=$?"
timeout 150 python3 benchmarks/e2e_gpt.py --out "$D/e2e_graphs" --lengths 2048 --c 8 --steps 30 \
  --loss-steps 0 --profile-lengths 0 --budget-s 140 --mode reduce-overhead --min-length 0 > "$D/e2e_graphs.log" 2>&1
stamp "e2e 2k graphs rc=$?"
timeout 200 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_min_length.py tests/test_cuda_graphs_gpu.py \
  > "$D/tests.log" 2>&1
stamp "tests rc=$?"
tail -3 "$D/tests.log"
for x in e2e_default e2e_graphs; do
  sed -n '/## Step time/,/## Loss curves/p' "$D/$x/e2e_gpt.md" 2>/dev/null | grep -E "^\| [0-9]+ \|" || tail -3 "$D/$x.log"
done
pack stop19_4
