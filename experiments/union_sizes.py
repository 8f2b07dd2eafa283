"""How large are the kernels' unions on real attention? For every attention call of a model, the
expected union size of each 128-row block, in units of c:

    E|U_b| = sum_j min(1, c * max_{i in b} W_ij)

(the kernels share one uniform u_j per column within a block, so column j is in the union iff
u_j < c max_i W_ij). The backward's phase (b) works on rows x union; a union over the capacity
(64 c since stop 14, 16 c before) sends its block down the all-columns path. Models: the KJV GPT
(trained here, causal, n = 2048) and all-MiniLM-L6-v2 (pretrained, bidirectional, n = 512), on
KJV text; random q, k for comparison. CPU, float32. Writes experiments/variance/union_sizes.json.

    PYTHONPATH=. python3 experiments/union_sizes.py
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models  # noqa: E402
from attention_entropy import attention_weights, per_attention_site  # noqa: E402

BM = 128
CS = (8.0, 32.0)


def block_unions(w, c, bm=BM):
    """Expected union size per bm-row block of W [..., Lq, Lk], divided by c: [..., Lq / bm]."""
    Lq = w.shape[-2]
    wb = w[..., : Lq // bm * bm, :].unflatten(-2, (Lq // bm, bm))
    return (c * wb.amax(-2)).clamp(max=1.0).sum(-1) / c


def summarize(u):
    u = u.flatten().double()
    return {"mean_over_c": float(u.mean()), "p99_over_c": float(u.quantile(0.99)), "max_over_c": float(u.max()),
            "blocks_over_16c": float((u > 16).double().mean()), "blocks_over_64c": float((u > 64).double().mean())}


def union_stats(model, batch, loss_fn=None):
    return per_attention_site(model, batch, lambda w: {f"c={c:g}": summarize(block_unions(w, c)) for c in CS},
                              loss_fn)


def random_stats(n, D, H, qscale, causal):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, H, n, D, generator=g) for _ in range(2))
    w = attention_weights(q * qscale, k, is_causal=causal)
    return {f"c={c:g}": summarize(block_unions(w, c)) for c in CS}


if __name__ == "__main__":
    res = {}
    m, gb = models.gpt_kjv(n=2048, batch_size=1)
    res["gpt_kjv n=2048 (causal)"] = union_stats(m.eval(), gb(0))
    m, gb, lf = models.minilm(n=512, batch_size=1)
    res["minilm n=512 (bidirectional)"] = union_stats(m.eval(), gb(0), lf)
    for qs in (1.0, 2.0, 3.0):
        res[f"random n=2048 D=64 H=4 causal, q x {qs:g}"] = random_stats(2048, 64, 4, qs, True)
    print(json.dumps(res, indent=1))
    rows = [(name, site, c, st) for name, sites in res.items()
            for site, per_c in (sites.items() if "random" not in name else [("-", sites)])
            for c, st in per_c.items()]
    print("\n| model | layer | c | union mean / c | p99 / c | max / c | blocks > 16c | blocks > 64c |")
    print("|---|---|---|---|---|---|---|---|")
    for name, site, c, st in rows:
        print(f"| {name} | {site} | {c} | {st['mean_over_c']:.1f} | {st['p99_over_c']:.1f} | {st['max_over_c']:.1f} | "
              f"{100 * st['blocks_over_16c']:.1f}% | {100 * st['blocks_over_64c']:.1f}% |")
    with open(os.path.join(HERE, "variance", "union_sizes.json"), "w") as f:
        json.dump(res, f, indent=1)
