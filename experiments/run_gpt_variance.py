"""Variance table and calibration for the byte-level GPT trained on the KJV Bible.

    PYTHONPATH=. python3 experiments/run_gpt_variance.py grid        # c x n table -> variance/gpt_kjv.json/.png
    PYTHONPATH=. python3 experiments/run_gpt_variance.py calibrate   # per-site, calibrated policy vs uniform c
    PYTHONPATH=. python3 experiments/run_gpt_variance.py calibrate_minilm   # the same for all-MiniLM-L6-v2, n=512

The model: experiments/gpt_kjv/ckpt.pt (examples/train_gpt.py pretrain, context 2048; RoPE, so
n = 4096 is an extrapolation beyond the training context). Batch size 1 (one sequence of n
bytes; the loss averages over its n tokens). Patch engine (no compile; same op and backward as
backend="sus": tests/test_variance.py::test_compile_engine_matches_patch_engine).
"""
from __future__ import annotations

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from models import gpt_kjv  # noqa: E402
from sus_fx import calibrate as C  # noqa: E402
from sus_fx import variance as V  # noqa: E402

OUT = os.path.join(HERE, "variance")
CS = [4.0, 8.0, 16.0, 32.0, 64.0]
# (n, batches for (a), fixed batches for (b), draws per fixed batch): fewer at long n (CPU time).
# One draw per fixed batch, several fixed batches: (b) scales with each batch's own gradient, so
# averaging it over batches (like (a)) matters more than more draws on one batch.
PLAN = [(512, 24, 6, 1), (1024, 24, 6, 1), (2048, 16, 4, 1), (4096, 12, 3, 1)]


def grid():
    results = []
    for n, nb, fb, dr in PLAN:
        torch.manual_seed(0)
        model, gb = gpt_kjv(n=n, batch_size=1)
        res = V.measure(model, gb, cs=CS, batches=nb, fixed_batches=fb, draws=dr, n=n, batch_size=1,
                        engine="patch", label=f"gpt n={n}")
        results.append(res)
        with open(os.path.join(OUT, "gpt_kjv.json"), "w") as f:
            json.dump(V.jsonable(results), f, indent=1)
        print(V.format_table(res, groups=True), flush=True)
    print("\nrelative variance increase, c x n:\n" + V.table_grid(results))
    print("\n% cut, c x n:\n" + V.table_grid(results, "fraction_cut"))
    V.plot(results, os.path.join(OUT, "gpt_kjv.png"), title="byte-level GPT (4 layers) on KJV, batch size 1")


def calibrate(n=2048, budget=0.01, model_name="gpt_kjv", batch_size=1, uniform=(40.0, 48.0, 56.0, 64.0, 80.0)):
    """Per-site measurement (reused from the JSON if present), calibration with log-log
    interpolation between measured c, and verification: the calibrated policy and uniform c values
    around the same variance, all sites sampled, on 8 fixed batches (one draw each)."""
    import models
    factory = getattr(models, model_name)
    torch.manual_seed(0)
    out = factory(n=n, batch_size=batch_size)
    model, gb, loss_fn = (out + (None,))[:3]
    path_json = os.path.join(OUT, f"{model_name}_calibrate_n{n}.json")
    if os.path.exists(path_json):
        meas = json.load(open(path_json))["measurement"]
        for r in meas["rows"]:
            r["c"] = float("inf") if r["c"] == "exact" else r["c"]
    else:
        site_cs = [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
        meas = V.measure(model, gb, cs=[], per_site=True, site_cs=site_cs, batches=12, fixed_batches=2, draws=1,
                         n=n, batch_size=batch_size, loss_fn=loss_fn, engine="patch", label="per-site")
    cal = C.calibrate(meas, budget, interpolate=4)
    grid_only = C.calibrate(meas, budget, interpolate=0)
    path = os.path.join(OUT, f"{model_name}_policy_n{n}.toml")
    with open(path, "w") as f:
        f.write(C.policy_toml({s: C._f(c) for s, c in cal["choice"].items()}, header=(
            f"sus-fx calibrate for experiments/models.py:{model_name}, n={n}, batch size {batch_size}, "
            f"budget {100 * budget:g}%\npredicted +{100 * cal['predicted_relative_increase']:.3g}% variance, "
            f"{100 * cal['predicted_fraction_cut']:.2f}% cut")))
    pol = C.load_policy(path)
    ver = V.measure(model, gb, cs=list(uniform), policies={"calibrated": pol}, batches=12, fixed_batches=8, draws=1,
                    n=n, batch_size=batch_size, loss_fn=loss_fn, engine="patch", seed=1, label="verify")
    cmp_ = C.compare(ver)
    # the same comparison predicted from the per-site sums (no measurement noise in the ratio)
    with open(path_json + ".partial", "w") as f:
        json.dump(V.jsonable({"calibration": cal, "measurement": meas, "verification": ver}), f)
    table = C.refine_table(C.per_site_table(meas), 4)  # the candidates the calibration chose from
    pr, pk = C.predicted(table, {s: C._f(c) for s, c in cal["choice"].items()})
    common = sorted(set.intersection(*[set(v) for v in table.values()]) - {float("inf")})
    curve = [(C.predicted(table, {s: c for s in table}), c) for c in common]
    u = C.uniform_at([{"kind": "uniform", "c": c, "relative_increase": r, "kept_entries": k}
                      for (r, k), c in curve], pr)
    cmp_["predicted_from_per_site_sums"] = {"calibrated": {"relative_increase": pr, "kept_entries": pk},
                                            "uniform_at_same_variance": u,
                                            "kept_ratio": pk / u["kept_entries"] if u else None}
    with open(path_json, "w") as f:
        json.dump(V.jsonable({"calibration": cal, "calibration_grid_only": grid_only, "measurement": meas,
                              "verification": ver, "comparison": cmp_}), f, indent=1)
    os.remove(path_json + ".partial")
    print(V.format_table(meas))
    print(json.dumps(cal["choice"], indent=1))
    print(V.format_table(ver))
    print(C.describe_comparison(cmp_))
    print("predicted from per-site sums:", json.dumps(cmp_["predicted_from_per_site_sums"]))


def calibrate_minilm():
    calibrate(n=512, model_name="minilm", batch_size=2, uniform=(32.0, 48.0, 64.0, 96.0, 128.0))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    {"grid": grid, "calibrate": calibrate, "calibrate_minilm": calibrate_minilm}[sys.argv[1]]()
