"""The reference implementation: exact forward and SUS backward in plain torch.

It is the CPU implementation, the GPU fallback, and the oracle the Triton kernels
are tested against, so it stays plain. Shapes are canonical (see `ops.py`):

    q [B, H, Lq, E],  k [B, Hkv, Lk, E],  v [B, Hkv, Lk, Ev],  H = G * Hkv

GQA is handled by viewing q as [B, Hkv, G, Lq, E] and broadcasting k/v over G, so
repeated K/V never exist. Work goes in blocks of query rows: memory is
O(B * H * block * Lk), never the whole Lq x Lk matrix.

The estimator (../shared/SUS_METHOD.md): W_ij is kept with probability
q_ij = min(1, c W_ij) and a kept entry is divided by q_ij. Uniforms come on a
2^-24 grid (torch.rand float32), so P(u < q) = ceil(q 2^24) / 2^24 =: q'. We keep
iff u < q' and weight by W / q': the keep probability and the weight agree exactly,
so the estimate is exactly unbiased (q' differs from q by < 6e-8).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from . import stats as _stats

# Elements of one [B, H, block, Lk] temporary; a few of them live at once.
_BLOCK_ELEMENTS = 1 << 21
_U_GRID = float(1 << 24)


def row_block_size(B: int, H: int, Lq: int, Lk: int) -> int:
    """Query rows per block. Forward and backward must agree (dropout masks are
    regenerated block by block), so it depends on the shapes alone."""
    return max(1, min(max(Lq, 1), _BLOCK_ELEMENTS // max(1, B * H * max(Lk, 1))))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mask_block(mask: Optional[torch.Tensor], is_causal: bool, i0: int, i1: int, Lq: int, Lk: int,
                H: int, Hkv: int, acc: torch.dtype, device) -> Optional[torch.Tensor]:
    """Additive bias for query rows [i0, i1), shaped to broadcast against
    [B, Hkv, G, i1 - i0, Lk]; -inf where a key is masked out. None if no mask."""
    bias = None
    if mask is not None:
        m = mask
        while m.dim() < 4:
            m = m.unsqueeze(0)
        if m.shape[2] != 1:
            m = m[:, :, i0:i1]
        if m.shape[1] == 1:
            m = m.unsqueeze(1)  # [b, 1, 1, rows, lk]
        else:
            m = m.reshape(m.shape[0], Hkv, H // Hkv, m.shape[2], m.shape[3])
        if m.dtype == torch.bool:
            bias = torch.zeros(m.shape, dtype=acc, device=device).masked_fill_(~m, float("-inf"))
        else:
            bias = m.to(acc)
    if is_causal:
        # SDPA's alignment: key j is visible from query i iff j <= i (top-left).
        rows = torch.arange(i0, i1, device=device)[:, None]
        cols = torch.arange(Lk, device=device)[None, :]
        causal = torch.zeros((i1 - i0, Lk), dtype=acc, device=device).masked_fill_(cols > rows, float("-inf"))
        bias = causal if bias is None else bias + causal
    return bias


def _scores(q5b, k5, bias, scale):
    s = torch.matmul(q5b, k5.transpose(-1, -2)) * scale
    return s if bias is None else s + bias


def _dropout_keep(gen, shape, p, device) -> torch.Tensor:
    """Keep mask scaled by 1/(1-p), SDPA's distribution: each entry kept w.p. 1-p."""
    u = torch.rand(shape, generator=gen, device=device)
    return (u >= p).to(torch.float32) / (1.0 - p)


def _generator(seed: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) & ((1 << 63) - 1))
    return g


def _views(q, k, v):
    B, H, Lq, E = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    return q.reshape(B, Hkv, G, Lq, E), k[:, :, None], v[:, :, None], B, H, Hkv, G, Lq, k.shape[2]


def forward(q, k, v, mask, is_causal: bool, scale: float, dropout_p: float = 0.0,
            dropout_seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact attention, block by block. Returns (out [B,H,Lq,Ev] in q's dtype,
    lse [B,H,Lq] float32 (float64 for float64 inputs)). A row with every key
    masked gives out 0 and lse 0, as torch's CPU flash kernel does."""
    acc = accumulation_dtype(q.dtype)
    q5, k5, v5, B, H, Hkv, G, Lq, Lk = _views(q, k, v)
    k5, v5 = k5.to(acc), v5.to(acc)
    out = torch.empty(B, Hkv, G, Lq, v.shape[-1], dtype=acc, device=q.device)
    lse = torch.empty(B, Hkv, G, Lq, dtype=acc, device=q.device)
    bq = row_block_size(B, H, Lq, Lk)
    gen = _generator(dropout_seed, q.device) if dropout_p > 0 else None
    for i0 in range(0, Lq, bq):
        i1 = min(Lq, i0 + bq)
        s = _scores(q5[:, :, :, i0:i1].to(acc), k5, _mask_block(mask, is_causal, i0, i1, Lq, Lk, H, Hkv, acc, q.device), scale)
        m = s.amax(-1, keepdim=True)
        m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        p = torch.exp(s - m)
        l = p.sum(-1, keepdim=True)
        w = p / torch.where(l == 0, torch.ones_like(l), l)
        if gen is not None:
            w = w * _dropout_keep(gen, w.shape, dropout_p, q.device).to(acc)
        out[:, :, :, i0:i1] = torch.matmul(w, v5)
        row_lse = (m + torch.log(l)).squeeze(-1)
        lse[:, :, :, i0:i1] = torch.where(l.squeeze(-1) == 0, torch.zeros_like(row_lse), row_lse)
    return out.reshape(B, H, Lq, v.shape[-1]).to(q.dtype), lse.reshape(B, H, Lq)


def sample_weights(w: torch.Tensor, c: float, gen: Optional[torch.Generator]):
    """The SUS sampler on a block of weights: returns (W~, kept) with E[W~] = W.
    Independent Bernoulli masks, keep probability ceil(min(1, cW) 2^24) / 2^24."""
    if math.isinf(c):
        return w, w > 0
    qk = torch.clamp(w * c, max=1.0)
    qk = torch.ceil(qk * _U_GRID) / _U_GRID  # the exact keep probability on the uniform grid
    u = torch.rand(w.shape, generator=gen, device=w.device, dtype=torch.float32).to(w.dtype)
    kept = u < qk
    wt = torch.where(kept, w / torch.where(kept, qk, torch.ones_like(qk)), torch.zeros_like(w))
    # A NaN weight (NaN in the inputs) must reach the gradient as it does in SDPA, not be dropped.
    return torch.where(torch.isnan(w), w, wt), kept


def backward(dout, q, k, v, out, lse, mask, is_causal: bool, scale: float, c: float,
             sample_seed: int, dropout_p: float = 0.0, dropout_seed: int = 0, mask_grad: bool = False):
    """SUS backward. Returns (dq, dk, dv, dmask) in the inputs' dtypes; dmask (the gradient of a
    float additive mask, the same estimate dS summed to the mask's shape) is None unless mask_grad."""
    acc = accumulation_dtype(q.dtype)
    q5, k5, v5, B, H, Hkv, G, Lq, Lk = _views(q, k, v)
    k5, v5 = k5.to(acc), v5.to(acc)
    do5 = dout.reshape(B, Hkv, G, Lq, dout.shape[-1])
    o5 = out.reshape(B, Hkv, G, Lq, out.shape[-1])
    lse5 = lse.reshape(B, Hkv, G, Lq).to(acc)
    lse5 = torch.where(torch.isneginf(lse5), torch.zeros_like(lse5), lse5)
    dq = torch.empty(q5.shape, dtype=acc, device=q.device)
    dk = torch.zeros(B, Hkv, Lk, k.shape[-1], dtype=acc, device=q.device)
    dv = torch.zeros(B, Hkv, Lk, v.shape[-1], dtype=acc, device=q.device)
    bq = row_block_size(B, H, Lq, Lk)
    drop_gen = _generator(dropout_seed, q.device) if dropout_p > 0 else None
    sample_gen = _generator(sample_seed, q.device)
    dmask = None
    if mask_grad:
        m4 = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
        dmask = torch.zeros(m4.shape, dtype=acc, device=q.device)
    recording = _stats.recording()
    rows = kept_total = kept_max = valid_total = 0.0
    for i0 in range(0, Lq, bq):
        i1 = min(Lq, i0 + bq)
        qb = q5[:, :, :, i0:i1].to(acc)
        dob = do5[:, :, :, i0:i1].to(acc)
        s = _scores(qb, k5, _mask_block(mask, is_causal, i0, i1, Lq, Lk, H, Hkv, acc, q.device), scale)
        w = torch.exp(s - lse5[:, :, :, i0:i1, None])
        wt, kept = sample_weights(w, c, sample_gen)
        dp = torch.matmul(dob, v5.transpose(-1, -2))  # dP_ij = dO_i . V_j
        if drop_gen is not None:
            z = _dropout_keep(drop_gen, w.shape, dropout_p, q.device).to(acc)
            dp = dp * z
            wz = wt * z
        else:
            wz = wt
        d = (dob * o5[:, :, :, i0:i1].to(acc)).sum(-1, keepdim=True)  # D_i from the exact output
        ds = wt * (dp - d)
        dq[:, :, :, i0:i1] = torch.matmul(ds, k5) * scale
        dk += torch.einsum("bhgqk,bhgqe->bhke", ds, qb) * scale
        dv += torch.einsum("bhgqk,bhgqe->bhke", wz, dob)
        if dmask is not None:
            _accumulate_mask_grad(dmask, ds.reshape(B, H, i1 - i0, Lk), i0, i1)
        if recording:
            valid = ~torch.isneginf(s)
            per_row = kept.sum(-1).to(torch.float64)
            has_keys = valid.any(-1)
            rows += float(has_keys.sum())
            kept_total += float(per_row.sum())
            kept_max = max(kept_max, float(per_row.max()) if per_row.numel() else 0.0)
            valid_total += float(valid.sum())
    if recording:
        _stats.record(_stats.BackwardRecord(shape=(B, H, Lq, Lk), c=c, rows=int(rows), kept_total=kept_total,
                                            kept_max=kept_max, valid_total=valid_total))
    if dmask is not None:
        dmask = dmask.reshape(mask.shape).to(mask.dtype)
    return dq.reshape(q.shape).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dmask


def _accumulate_mask_grad(dmask: torch.Tensor, ds: torch.Tensor, i0: int, i1: int) -> None:
    """Add dS of rows [i0, i1) into the gradient of a mask broadcast to [B, H, Lq, Lk]."""
    for dim in (0, 1, 3):
        if dmask.shape[dim] == 1 and ds.shape[dim] != 1:
            ds = ds.sum(dim, keepdim=True)
    if dmask.shape[2] == 1:
        dmask += ds.sum(2, keepdim=True)
    else:
        dmask[:, :, i0:i1] += ds
