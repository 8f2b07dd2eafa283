"""Phase (a) under Nsight Compute: the Triton union kernel (SM90=0) and the Gluon one (SM90=1).

    ncu --profile-from-start off --section SpeedOfLight --section WarpStateStats ... \
        python3 benchmarks/ncu_union.py [--n 16384] [--d 128] [--h 16] [--c 32]

Both variants are compiled and run once first; only the launches between cudaProfilerStart and
Stop (one union pass of each) are profiled. Causal, bf16, B=1.
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
    ap.add_argument("--variants", default="0,1", help="SM90 values to profile")
    a = ap.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(1, a.h, a.n, a.d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(4))
    s = 1 / math.sqrt(a.d)
    o, lse = dispatch.forward(q, k, v, None, True, s, 0.0)

    def union(sm90):
        sus_bwd._OVERRIDE.update(SM90=sm90, debug="union_only")
        try:
            sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, s, a.c, 1)
        finally:
            sus_bwd._OVERRIDE.clear()

    variants = [int(x) for x in a.variants.split(",")]
    for sm90 in variants:  # compile outside the profiled range
        union(sm90)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for sm90 in variants:
        union(sm90)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
