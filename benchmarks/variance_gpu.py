"""Variance of the kernels' sampler against independent Bernoulli masks (the reference) at the same c.

The kernels draw one uniform per (query block, column): entries of a column within a block of BM rows
are comonotone (kept together), entries of a row within a key tile follow a shifted lattice. Marginals
are exact either way; this measures what the correlations do to E||g - g_exact||^2 for dQ, dK, dV.

    python3 benchmarks/variance_gpu.py --out DIR
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sus_fx import reference  # noqa: E402
from sus_fx.kernels import dispatch, sus_bwd  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--draws", type=int, default=48)
    args = ap.parse_args()
    rows = []
    for L, qscale, c, corr in [(1024, 1.0, 16.0, 0.0), (1024, 3.0, 16.0, 0.0), (2048, 1.0, 32.0, 0.0),
                               (1024, 1.0, 16.0, 0.9)]:
        B, H, D = 1, 4, 64
        g = torch.Generator(device="cuda").manual_seed(L + int(qscale))
        q = torch.randn(B, H, L, D, device="cuda", generator=g) * qscale
        k = torch.randn(B, H, L, D, device="cuda", generator=g)
        v = torch.randn(B, H, L, D, device="cuda", generator=g)
        do = torch.randn(B, H, L, D, device="cuda", generator=g)
        if corr:  # neighbouring rows' dO correlated (as in real models): AR(1) along the sequence
            for i in range(1, L):
                do[:, :, i] = corr * do[:, :, i - 1] + math.sqrt(1 - corr ** 2) * do[:, :, i]
        s = 1 / math.sqrt(D)
        out, lse = dispatch.forward(q, k, v, None, True, s, 0.0)
        ex = sus_bwd.sus_backward(do, q, k, v, None, out, lse, True, s, float("inf"), 0)
        acc = {"kernel": [0.0, 0.0, 0.0], "independent": [0.0, 0.0, 0.0]}
        for n in range(args.draws):
            gk = sus_bwd.sus_backward(do, q, k, v, None, out, lse, True, s, c, 10_000 + n)
            gr = reference.backward(do, q, k, v, out, lse, None, True, s, c, 10_000 + n)[:3]
            for name, gg in (("kernel", gk), ("independent", gr)):
                for i in range(3):
                    acc[name][i] += float(((gg[i].double() - ex[i].double()) ** 2).sum()) / args.draws
        norms = [float((e.double() ** 2).sum()) for e in ex]
        row = dict(L=L, H=H, D=D, qscale=qscale, c=c, dO_corr=corr, draws=args.draws,
                   **{f"{n}_ratio": acc["kernel"][i] / acc["independent"][i] for i, n in enumerate("qkv")},
                   **{f"{n}_relvar_kernel": acc["kernel"][i] / norms[i] for i, n in enumerate("qkv")},
                   **{f"{n}_relvar_indep": acc["independent"][i] / norms[i] for i, n in enumerate("qkv")})
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(os.path.join(args.out, "variance.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("| L | q scale | c | dO corr | dQ var ratio | dK var ratio | dV var ratio | rel var dQ (kern/indep) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['L']} | {r['qscale']} | {r['c']:g} | {r['dO_corr']} | {r['q_ratio']:.3f} | {r['k_ratio']:.3f} | "
              f"{r['v_ratio']:.3f} | {r['q_relvar_kernel']:.2e} / {r['q_relvar_indep']:.2e} |")


if __name__ == "__main__":
    main()
