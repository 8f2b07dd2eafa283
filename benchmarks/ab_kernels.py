"""The backward at two revisions of sus_fx/kernels, in one process on one GPU: what a kernel change
moved, without the run-to-run drift (+-3% on the H200) that separate runs carry.

    bash benchmarks/ab_old.sh REV            # the old revision's kernels -> benchmarks/_ab_old
    python3 benchmarks/ab_kernels.py [--cases 16k,16k_c8,64k,d64,gpt_q2] [--rounds 3]

For each case (causal, bf16, B=1, inputs as attention.py makes them): sus_backward's time at each
revision, do_bench medians in alternating rounds (old, new, old, new, ...), the median over the
rounds; then every kernel of one sus_backward at each revision (torch.profiler, device time).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

import torch
import triton

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "_ab_old"))
from attention import make_inputs  # noqa: E402
from profile_kernels import kernels  # noqa: E402
from sus_fx.kernels import dispatch, sus_bwd as new  # noqa: E402

# name: (n, H, head dim, c, layout, q scale)
CASES = {"16k": (16384, 16, 128, 32.0, "bhld", 1.0), "16k_c8": (16384, 16, 128, 8.0, "bhld", 1.0),
         "64k": (65536, 16, 128, 32.0, "bhld", 1.0), "d64": (16384, 32, 64, 32.0, "bhld", 1.0),
         "gpt_q2": (16384, 12, 64, 32.0, "packed", 2.0)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="16k,16k_c8,64k,d64,gpt_q2")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from sus_fx_old.kernels import sus_bwd as old
    rev = open(os.path.join(HERE, "_ab_old", "REV")).read().strip()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; old = {rev}")
    # Both revisions must take the same phase (a). An import of the Gluon union that fails (stop 18:
    # both revisions registered sus::union_sm90) sends sus_backward to the Triton kernel, and retries
    # the import on every call: the A/B then times module imports.
    if torch.cuda.get_device_capability() == (9, 0):
        for rv, mod in (("old", old), ("new", new)):
            if hasattr(mod, "_sm90_union") and mod._sm90_union() is None:
                raise SystemExit(f"ab_kernels: the {rv} revision's Gluon union (union_hopper) does not import")
    table = []
    for name in a.cases.split(","):
        n, H, D, c, layout, qs = CASES[name]
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (t.detach() for t in make_inputs(H, n, D, g, layout, qs))
        s = 1 / math.sqrt(D)
        o, lse = dispatch.forward(q, k, v, None, True, s, 0.0)
        runs = {"old": lambda: old.sus_backward(do, q, k, v, None, o, lse, True, s, c, 1),
                "new": lambda: new.sus_backward(do, q, k, v, None, o, lse, True, s, c, 1)}
        # same seed, same inputs: the two revisions must agree (a kernel change is not a numerics change)
        ga, gb = runs["old"](), runs["new"]()
        err = max(float((x.float() - y.float()).abs().max()) for x, y in zip(ga, gb))
        times = {"old": [], "new": []}
        for _ in range(a.rounds):
            for rv in ("old", "new"):
                times[rv].append(triton.testing.do_bench(runs[rv], warmup=25, rep=200, return_mode="median"))
        med = {rv: statistics.median(ts) for rv, ts in times.items()}
        table.append((name, med["old"], med["new"], err, times))
        for rv in ("old", "new"):
            print(f"\n{name} {rv}: kernels of one sus_backward (us)")
            for t, cnt, key in kernels(runs[rv], reps=10):
                print(f"  {t * 1000:9.1f}  x{cnt:g}  {key[:90]}")
    print("\n| case | old ms | new ms | new / old | max |grad diff| | rounds old | rounds new |")
    print("|---|---|---|---|---|---|---|")
    for name, mo, mn, err, ts in table:
        print(f"| {name} | {mo:.3f} | {mn:.3f} | {mn / mo:.3f} | {err:.2e} | "
              f"{' '.join(f'{x:.3f}' for x in ts['old'])} | {' '.join(f'{x:.3f}' for x in ts['new'])} |")


if __name__ == "__main__":
    main()
