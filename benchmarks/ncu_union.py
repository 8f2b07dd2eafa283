"""The backward's kernels under Nsight Compute: by default phase (a) of the Triton union kernel
(SM90=0) and of the Gluon one (SM90=1); with --full the whole backward (pick kernels with ncu -k).

    ncu --profile-from-start off --section SpeedOfLight --section WarpStateStats ... \
        python3 benchmarks/ncu_union.py [--n 16384] [--d 128] [--h 16] [--c 32] [--full] \
        [--variants "SM90=0;SM90=1,stages_b=2"]

Each variant (a number is an SM90 value; else sus_bwd.config() overrides, k=v,k=v) is compiled
and run once first; only the launches between cudaProfilerStart and Stop (one pass of each) are
profiled. Causal, bf16, B=1.
"""
from __future__ import annotations

import argparse
import math

import torch

from sus_fx.kernels import dispatch, sus_bwd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--h", type=int, default=16)
    ap.add_argument("--c", type=float, default=32.0)
    ap.add_argument("--variants", default="0,1", help="SM90 values (comma-separated), or config overrides "
                    "k=v,k=v separated by semicolons")
    ap.add_argument("--full", action="store_true", help="the whole backward, not phase (a) only")
    a = ap.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(1, a.h, a.n, a.d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(4))
    s = 1 / math.sqrt(a.d)
    o, lse = dispatch.forward(q, k, v, None, True, s, 0.0)

    def run(ov):
        sus_bwd._OVERRIDE.update(ov)
        if not a.full:
            sus_bwd._OVERRIDE["debug"] = "union_only"
        try:
            sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, s, a.c, 1)
        finally:
            sus_bwd._OVERRIDE.clear()

    if "=" in a.variants:
        variants = [{kv.split("=")[0]: int(kv.split("=")[1]) for kv in spec.split(",") if kv}
                    for spec in a.variants.split(";")]
    else:
        variants = [dict(SM90=int(x)) for x in a.variants.split(",")]
    for ov in variants:  # compile outside the profiled range
        run(ov)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for ov in variants:
        run(ov)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
