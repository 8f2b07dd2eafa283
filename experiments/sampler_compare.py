"""Which sampler? Variance of the three ways to draw the SUS keep decisions, at equal c.

All three keep entry (i, j) with the same probability q_ij = min(1, c W_ij) (on a 2^-23 grid) and
weight it by W_ij / q_ij, so they are unbiased and keep the same expected number of entries; they
differ only in how decisions are correlated, which changes the variance:

  independent   one uniform per (i, j): the CPU reference (sus_fx/reference.py).
  row-lattice   one uniform per (row i, tile of 64 columns), u_ij = frac(R + (j mod 64) * alpha):
                a randomly shifted lattice along each row (SUS_METHOD.md's cheap scheme).
  block-lattice one uniform per (block of BM = 128 rows, tile of 64 columns), shared by the block's
                rows: what the Triton kernel (sus_fx/kernels/sus_bwd.py) draws on the GPU.

This script emulates the two lattice samplers in plain torch by replacing
sus_fx.reference.sample_weights (CPU), then measures the relative gradient variance increase of
the KJV GPT with sus_fx.variance.measure. Output: experiments/variance/samplers_n{n}.json.

    PYTHONPATH=. python3 experiments/sampler_compare.py [n]
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from models import gpt_kjv  # noqa: E402
from sus_fx import reference  # noqa: E402
from sus_fx import variance as V  # noqa: E402

GRID = 1 << 23
A23 = 5184561


def lattice_sampler(BM: int, BN: int = 64):
    """sample_weights replacement: u shared by BM consecutive rows, lattice over BN-column tiles."""
    def sample(w, c, gen):
        if math.isinf(c):
            return w, w > 0
        rows, Lk = w.shape[-2], w.shape[-1]
        lead = w.shape[:-2]
        groups, tiles = -(-rows // BM), -(-Lk // BN)
        R = torch.randint(0, GRID, lead + (groups, tiles), generator=gen, device=w.device, dtype=torch.int64)
        R = R.repeat_interleave(BM, dim=-2)[..., :rows, :].repeat_interleave(BN, dim=-1)[..., :Lk]
        jl = (torch.arange(Lk, device=w.device) % BN).to(torch.int64)
        u = ((R + jl * A23) & (GRID - 1)).to(w.dtype) / GRID
        qk = torch.ceil(torch.clamp(w * c, max=1.0) * GRID) / GRID
        kept = u < qk
        wt = torch.where(kept, w / torch.where(kept, qk, torch.ones_like(qk)), torch.zeros_like(w))
        return torch.where(torch.isnan(w), w, wt), kept
    return sample


@contextlib.contextmanager
def sampler(fn):
    orig = reference.sample_weights
    if fn is not None:
        reference.sample_weights = fn
    try:
        yield
    finally:
        reference.sample_weights = orig


def main(n=2048):
    torch.manual_seed(0)
    model, gb = gpt_kjv(n=n, batch_size=1)
    bq = reference.row_block_size(1, model.cfg.n_head, n, n)
    assert bq % 128 == 0 or bq >= n, f"reference row block {bq} must be a multiple of BM"
    out = {}
    for name, fn in [("independent", None), ("row-lattice", lattice_sampler(1)),
                     ("block-lattice BM=128", lattice_sampler(128))]:
        with sampler(fn):
            res = V.measure(model, gb, cs=[8.0, 32.0], batches=16, fixed_batches=4, draws=1, n=n, batch_size=1,
                            engine="patch", label=name)
        out[name] = res
        print(name)
        print(V.format_table(res), flush=True)
    with open(os.path.join(HERE, "variance", f"samplers_n{n}.json"), "w") as f:
        json.dump(V.jsonable(out), f, indent=1)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2048)
