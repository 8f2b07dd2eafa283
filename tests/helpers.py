"""Shared test utilities: float64 references and the statistical unbiasedness check."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

INF = float("inf")


def sdpa64(q, k, v, mask=None, is_causal=False, scale=None, enable_gqa=False):
    """SDPA in float64 (math path), with causal and mask combined if both are given."""
    q, k, v = q.double(), k.double(), v.double()
    if mask is not None and mask.is_floating_point():
        mask = mask.double()
    if is_causal and mask is not None:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        if mask.dtype == torch.bool:
            mask = mask & causal
        else:
            mask = mask.masked_fill(~causal, float("-inf"))
        is_causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                          enable_gqa=enable_gqa)


def exact_grads(q, k, v, grad_out, **kw):
    qq, kk, vv = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = sdpa64(qq, kk, vv, **kw)
    return torch.autograd.grad(out, (qq, kk, vv), grad_out.double())


def sus_grads(q, k, v, grad_out, c, **kw):
    import sus_fx
    qq, kk, vv = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = sus_fx.sus_attention(qq, kk, vv, c=c, **kw)
    return torch.autograd.grad(out, (qq, kk, vv), grad_out)


def assert_unbiased(draws: torch.Tensor, exact: torch.Tensor, z_max: float = 5.5, name: str = "",
                    rare_atol: float = 2e-3):
    """draws: [N, ...] samples of an estimator; exact: its target.

    Per entry, z = (mean - exact) / (std / sqrt(N)), with std estimated from the draws. Under
    unbiasedness z is ~N(0, 1); with a few hundred entries the largest |z| stays under ~4, so 5.5
    leaves room while a real bias of a fraction of a standard deviation fails.

    Entries with zero spread saw the same value in every draw: either nothing there is random, or
    their random part comes only from keep events too rare to occur in N draws (probability below
    ~3/N). Such an event contributes W_ij <= q_ij / c <= 3 / (N c) times a gradient-sized factor, so
    these entries must match the exact value to `rare_atol` (relative to the gradient's scale)."""
    n = draws.shape[0]
    mean = draws.mean(0)
    std = draws.std(0)
    se = std / n ** 0.5
    scale = exact.abs().max().clamp_min(1e-12)
    fixed = std <= 1e-12 * scale
    assert torch.allclose(mean[fixed], exact[fixed], rtol=0, atol=rare_atol * float(scale)), \
        f"{name}: entries with no spread differ from the exact gradient"
    z = (mean[~fixed] - exact[~fixed]) / se[~fixed]
    zmax = float(z.abs().max()) if z.numel() else 0.0
    assert zmax < z_max, f"{name}: max |z| = {zmax:.2f} over {z.numel()} entries (N={n})"
    return zmax


def exit_spawned_rank():
    """End a spawned rank without running destructors. Freeing the last reference to a gloo
    process group (held by DDP's Reducer or FSDP's mesh, after destroy_process_group) joins gloo's
    run-loop thread while this thread holds the GIL; if that thread is still dropping its last
    work item's Python state it waits for the GIL: a deadlock, seen in CPU CI runs (main thread in
    ~ProcessGroupGloo -> thread::join, pt_gloo_runloop in take_gil; test_distributed.py in stop 10,
    test_reliability.py's DDP test in stop 14). Call it after the results are on disk (torch.save
    has closed the file); mp.spawn only needs exit status 0."""
    os._exit(0)
