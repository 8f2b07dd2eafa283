#!/bin/bash
# Stop 16, call 3 (one H200): the union capacity at 128 c (was 64 c), sus_fx.stats() under a strict
# compile (fixed), and --union-trace: the 8k timed steps replayed inside stats(), unions per step
# next to the step times. Then 16k, c = 8 and 32, with the rotary tables, and its loss curves.
#   OUT=/tmp/o bash benchmarks/run_stop16_3_gpu.sh
set -u
cd "$(dirname "$0")/.."
. benchmarks/gpu_run_setup.sh stop16_3
timeout 120 python3 -m pytest -q -p no:cacheprovider -rfE tests/test_kernels_gpu.py -k "stats or union" \
  > "$D/tests_gpu.log" 2>&1
stamp "tests rc=$?"
tail -n 2 "$D/tests_gpu.log"
timeout 240 python3 benchmarks/e2e_gpt.py --out "$D/e2e8k" --lengths 8192 --c 8,32 --steps 60 --union-trace \
  --loss-steps 0 --profile-lengths 0 --budget-s 230 > "$D/e2e8k.log" 2>&1
stamp "e2e 8k rc=$?"
grep -h "^| 8192 " "$D/e2e8k/e2e_gpt.md"
python3 - "$D/e2e8k/e2e_gpt.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["configs"]:
    tr = r.get("union_trace")
    if not tr:
        continue
    timed = r["step_ms_all"]
    print("c=%g timed/traced ms, union mean/max, over%%:" % r["c"])
    print(" ".join("%.0f/%.0f,%.0f/%.0f,%.1f" % (timed[e["step"] - 100] if e["step"] >= 100 else 0, e["ms"],
                   e["union_mean"], e["union_max"], 100 * e["over"]) for e in tr))
PY
(cd "$OUT" && tar czf stop16_3_a.tgz "$(basename "$D")")
timeout 230 python3 benchmarks/e2e_gpt.py --out "$D/e2e16k" --lengths 16384 --c 8,32 --steps 30 \
  --loss-steps 100 --budget-s 220 > "$D/e2e16k.log" 2>&1
stamp "e2e 16k rc=$?"
grep -h "^| 16384 \|within noise" "$D/e2e16k/e2e_gpt.md"
grep -E "^\| (SUS|attention|matmul|Inductor|optimizer|other)" "$D/e2e16k/e2e_gpt.md" | head -21
pack stop16_3
