"""How much would smaller row blocks shrink the backward's work on real attention? Phase (b) computes
every row of a block against every column of the block's union, so its work per row is the
block's union: E|U_b| = sum_j min(1, c max_{i in b} W_ij) (union_sizes.py). The kernels use
128-row blocks (the Gluon union's wgmma N). This computes the mean union per row for 128-, 64-, 32-
and 16-row blocks, in units of c, at c = 8 and 32: on the trained KJV GPT (causal, n = 2048), on
MiniLM (pretrained, bidirectional, n = 512) and on random q, k (q scaled by 1, 2, 3). A union of
1 c per row would be the paper's ideal (each row alone).

    PYTHONPATH=. python3 experiments/union_block_rows.py

CPU, float32; writes experiments/variance/union_block_rows.json and prints a table.
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models  # noqa: E402
from attention_entropy import attention_weights, per_attention_site  # noqa: E402
from union_sizes import CS, block_unions  # noqa: E402

BMS = (128, 64, 32, 16)


def per_row(w):
    """{c: {bm: mean E|U_b| / c}} for one attention call's weights."""
    return {f"c={c:g}": {bm: float(block_unions(w, c, bm).double().mean()) for bm in BMS} for c in CS}


def mean_over_sites(sites):
    return {c: {bm: sum(s[c][bm] for s in sites.values()) / len(sites) for bm in BMS} for c in next(iter(sites.values()))}


if __name__ == "__main__":
    res = {}
    m, gb = models.gpt_kjv(n=2048, batch_size=1)
    res["KJV GPT, n=2048, causal (mean of its layers)"] = mean_over_sites(per_attention_site(m.eval(), gb(0), per_row))
    m, gb, lf = models.minilm(n=512, batch_size=1)
    res["MiniLM, n=512, bidirectional (mean of its layers)"] = mean_over_sites(
        per_attention_site(m.eval(), gb(0), per_row, lf))
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 4, 2048, 64, generator=g) for _ in range(2))
    for qs in (1.0, 2.0, 3.0):
        res[f"random n=2048, D=64, causal, q x {qs:g}"] = per_row(attention_weights(q * qs, k, is_causal=True))
    with open(os.path.join(HERE, "variance", "union_block_rows.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("| attention | c | " + " | ".join(f"{bm}-row blocks" for bm in BMS) + " |")
    print("|---|---|" + "---|" * len(BMS))
    for name, per_c in res.items():
        for c, by in per_c.items():
            print(f"| {name} | {c[2:]} | " + " | ".join(f"{by[bm]:.2f}" for bm in BMS) + " |")
