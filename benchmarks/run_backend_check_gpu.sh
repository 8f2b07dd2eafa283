#!/bin/bash
# One device call after a change to the sus backend (~7 min on one H200): what the backend does
# to a compiled model, measured against backend="inductor". Written in stop 14 for the
# inductor_guard change, which was verified on CPU only.
#  - memory of one GPT-124M step at 8k tokens (memory_gpt.py): "compiled sus" should come close to
#    "compiled inductor". Before the change it was +1.5 GiB.
#  - the compiled-path GPU tests (test_kernels_gpu.py -k compiled, test_cuda_graphs_gpu.py);
#  - the end-to-end GPT at 16k (step time, losses, profile).
#   OUT=/tmp/o bash benchmarks/run_backend_check_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh backend_check
timeout 150 python3 benchmarks/memory_gpt.py --t 8192 > "$D/memory.txt" 2>&1
stamp "memory rc=$?"
grep -E "^\||^T=" "$D/memory.txt"
{ timeout 120 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py -k compiled
  timeout 120 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_cuda_graphs_gpu.py; } > "$D/tests_compiled.log" 2>&1
stamp "compiled tests rc=$?"
grep -E "passed|failed|error" "$D/tests_compiled.log" | tail -n 4
(cd "$OUT" && tar czf backend_check_a.tgz "$(basename "$D")")
timeout 220 python3 benchmarks/e2e_gpt.py --out "$D/e2e" --lengths 16384 --budget-s 180 > "$D/e2e.log" 2>&1
stamp "e2e rc=$?"
e2e_summary
pack backend_check
