"""Could the forward decide the backward's union? How much larger that union would be.

The union pass (phase (a)) recomputes S = Q K^T to find, per 128-row block, the columns some row may
keep: j with u_j < c max_i W_ij. It costs ~0.6 of the cuDNN forward at head dim 64 (GPT-124M on the
H200, notes/KERNELS.md stop 17), and it is what keeps the 8k and 16k end-to-end targets out of
reach. A forward kernel of our own computes S anyway, but it does not know lse_i until the row is
done. What it knows after key tile t is the running log-sum-exp lse_i(t) over the tiles seen so
far, a lower bound of lse_i, so W_ij <= exp(a S_ij - lse_i(t)) = W_ij / P_i(t), with P_i(t) the
mass of row i in the tiles processed up to j's. A forward-decided union tests that bound:

    E|U_b^fwd| = sum_j min(1, c max_{i in b} W_ij / P_i(t(j)))     (exact: P = 1)

It is a superset of the exact union (unbiasedness is untouched: phase (b) re-decides each entry
exactly), and phase (b)'s work grows with its size. Two tile orders: ascending (FlashAttention's
usual loop, from key 0) and descending (from the diagonal back). CPU, float32, the same models as
union_sizes.py: the trained KJV GPT (causal, n = 2048), MiniLM (bidirectional, n = 512), random
q, k. Writes experiments/variance/union_forward_bound.json and prints a table.

    PYTHONPATH=. python3 experiments/union_forward_bound.py
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models  # noqa: E402
from attention_entropy import attention_weights, per_attention_site  # noqa: E402

BM, BN = 128, 64
CS = (8.0, 32.0)


def seen_mass(w, order):
    """P_i(t(j)) for W [..., Lq, Lk]: the mass of row i in the key tiles processed up to and
    including j's tile, tiles taken in `order` ("ascending" or "descending")."""
    Lk = w.shape[-1]
    T = -(-Lk // BN)
    pad = T * BN - Lk
    tiles = torch.nn.functional.pad(w, (0, pad)).unflatten(-1, (T, BN)).sum(-1)  # [..., Lq, T]
    cum = tiles.cumsum(-1) if order == "ascending" else tiles.flip(-1).cumsum(-1).flip(-1)
    return cum.repeat_interleave(BN, dim=-1)[..., :Lk]


def block_union(bound, c):
    """Expected union per BM-row block of a keep bound [..., Lq, Lk], divided by c."""
    Lq = bound.shape[-2]
    b = bound[..., : Lq // BM * BM, :].unflatten(-2, (Lq // BM, BM))
    return (c * b.amax(-2)).clamp(max=1.0).sum(-1) / c


def stats(w):
    out = {}
    for c in CS:
        exact = block_union(w, c)
        row = {"exact_mean_over_c": float(exact.mean())}
        for order in ("ascending", "descending"):
            p = seen_mass(w, order)
            fwd = block_union(torch.where(w > 0, w / p.clamp_min(1e-30), torch.zeros_like(w)), c)
            row[f"{order}_mean_over_c"] = float(fwd.mean())
            row[f"{order}_max_over_c"] = float(fwd.max())
            row[f"{order}_ratio"] = float(fwd.sum() / exact.sum())
        out[f"c={c:g}"] = row
    return out


def random_stats(n, D, H, qscale, causal):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, H, n, D, generator=g) for _ in range(2))
    return stats(attention_weights(q * qscale, k, is_causal=causal))


if __name__ == "__main__":
    res = {}
    m, gb = models.gpt_kjv(n=2048, batch_size=1)
    res["gpt_kjv n=2048 (causal)"] = per_attention_site(m.eval(), gb(0), stats)
    m, gb, lf = models.minilm(n=512, batch_size=1)
    res["minilm n=512 (bidirectional)"] = per_attention_site(m.eval(), gb(0), stats, lf)
    for qs in (1.0, 3.0):
        res[f"random n=2048 D=64 H=4 causal, q x {qs:g}"] = {"-": random_stats(2048, 64, 4, qs, True)}
    os.makedirs(os.path.join(HERE, "variance"), exist_ok=True)
    with open(os.path.join(HERE, "variance", "union_forward_bound.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("| model | layer | c | exact union / c | ascending: / c (x exact, max / c) | descending: / c (x exact, max / c) |")
    print("|---|---|---|---|---|---|")
    for name, sites in res.items():
        for site, per_c in sites.items():
            for c, r in per_c.items():
                print(f"| {name} | {site} | {c} | {r['exact_mean_over_c']:.1f} | "
                      f"{r['ascending_mean_over_c']:.1f} ({r['ascending_ratio']:.1f}x, {r['ascending_max_over_c']:.0f}) | "
                      f"{r['descending_mean_over_c']:.1f} ({r['descending_ratio']:.1f}x, {r['descending_max_over_c']:.0f}) |")
