"""The SUS Triton kernels under TRITON_INTERPRET=1 on tiny CPU shapes (CI has no GPU).

The same kernels that run on the H100 (tests/test_kernels_gpu.py runs them there) run here through
Triton's interpreter: block sizes are shrunk (BM = BN = UB = 16) so that every path is taken
(several query blocks and key tiles, causal tile skipping, union lists, the all-columns fallback
of a block whose union overflows, deterministic per-slot partials, GQA, masks, D != Dv).
Not covered here: the compiled code itself (layouts, tensor-core dots, atomics' ordering) - only
the GPU run checks that.
"""
from __future__ import annotations

import importlib
import math
import os
import sys

import pytest
import torch

from sus_fx import reference


@pytest.fixture(scope="module")
def K():
    """sus_bwd re-imported with TRITON_INTERPRET=1 (triton.jit decides at decoration time)."""
    old = {k: os.environ.get(k) for k in ("TRITON_INTERPRET", "SUS_FX_INTERPRET_KERNELS")}
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["SUS_FX_INTERPRET_KERNELS"] = "1"
    import sus_fx.kernels.sus_bwd as mod
    mod = importlib.reload(mod)
    mod._OVERRIDE.update(BM=16, BN=16, UB=16, SUB=1)
    yield mod
    mod._OVERRIDE.clear()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    importlib.reload(mod)


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _problem(B=1, H=2, Hkv=1, Lq=40, Lk=40, D=16, Dv=16, mask=None, causal=False, seed=0, qscale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, D, generator=g) * qscale
    k = torch.randn(B, Hkv, Lk, D, generator=g)
    v = torch.randn(B, Hkv, Lk, Dv, generator=g)
    do = torch.randn(B, H, Lq, Dv, generator=g)
    m = None
    if mask == "bool":
        m = torch.rand(Lq, Lk, generator=g) > 0.3
        m[:, 0] = True
    elif mask == "float":
        m = torch.randn(1, H, Lq, Lk, generator=g)
    scale = 1.0 / math.sqrt(D)
    out, lse = reference.forward(q, k, v, m, causal, scale)
    return q, k, v, do, m, out, lse, scale


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_exact_matches_reference(K, causal, mask):
    q, k, v, do, m, out, lse, s = _problem(mask=mask, causal=causal, Lq=40, Lk=56 if not causal else 40)
    got = K.sus_backward(do, q, k, v, m, out, lse, causal, s, float("inf"), 1)
    ref = reference.backward(do, q, k, v, out, lse, m, causal, s, float("inf"), 1)[:3]
    for a, b in zip(got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert _rel(a, b) < 1e-5
    # a huge finite c keeps every entry with W >= 1/c: the exact gradient up to ~1/c
    got = K.sus_backward(do, q, k, v, m, out, lse, causal, s, 1e9, 3)
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-5


def test_gqa_odd_head_dims_exact(K):
    q, k, v, do, m, out, lse, s = _problem(H=4, Hkv=2, Lq=33, Lk=47, D=24, Dv=40)
    got = K.sus_backward(do, q, k, v, None, out, lse, False, s, float("inf"), 1)
    ref = reference.backward(do, q, k, v, out, lse, None, False, s, float("inf"), 1)[:3]
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        assert _rel(a, b) < 1e-5


def test_noncontiguous_inputs(K):
    q, k, v, do, m, out, lse, s = _problem(causal=True)
    # [B, L, H, D] storage viewed as [B, H, L, D]
    t = lambda x: x.transpose(1, 2).contiguous().transpose(1, 2)
    ref = K.sus_backward(do, q, k, v, None, out, lse, True, s, 4.0, 11)
    got = K.sus_backward(t(do), t(q), t(k), t(v), None, t(out), lse, True, s, 4.0, 11)
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-6


def test_seed_reproducible_and_modes_agree(K):
    q, k, v, do, m, out, lse, s = _problem(H=2, causal=True, mask="bool", Lq=48, Lk=48)
    a = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123)
    b = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123)
    d = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123, deterministic=True)
    other = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 124)
    for x, y, z, w in zip(a, b, d, other):
        assert torch.equal(x, y)
        assert _rel(x, z) < 1e-6
        assert _rel(x, w) > 1e-3  # another seed, other masks
    # the seed read on the device ((tensor, index, offset), as the op passes it) is the same seed
    seeds = torch.tensor([5, 100, 7], dtype=torch.int64)
    t = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, (seeds, 1, 23))
    for x, y in zip(a, t):
        assert torch.equal(x, y)
    # a tiny union capacity sends blocks down the all-columns path: same decisions, same gradients
    K._OVERRIDE["U_cap"] = 16
    try:
        e = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123)
        f = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123, deterministic=True)
    finally:
        del K._OVERRIDE["U_cap"]
    for x, y, z in zip(a, e, f):
        assert _rel(x, y) < 1e-6
        assert _rel(x, z) < 1e-6
    # phase (b) reading its column list a chunk ahead (the prefetch_cols knob): the same sums
    K._OVERRIDE["prefetch_cols"] = 1
    try:
        p = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123)
    finally:
        del K._OVERRIDE["prefetch_cols"]
    for x, y in zip(a, p):
        assert torch.equal(x, y)
    # phase (b) on half blocks (each reads its parent block's union and uniforms): same gradients
    K._OVERRIDE.update(BM=32, SUB=2)
    try:
        h = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123)
        K._OVERRIDE["BM"] = 16
        K._OVERRIDE["SUB"] = 1
        h16 = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123)
    finally:
        K._OVERRIDE.update(BM=16, SUB=1)
    assert all(_rel(x, y) > 1e-3 for x, y in zip(h, h16))  # other block size, other uniforms
    K._OVERRIDE.update(BM=32, SUB=1)
    try:
        h1 = K.sus_backward(do, q, k, v, m, out, lse, True, s, 4.0, 123)
    finally:
        K._OVERRIDE.update(BM=16, SUB=1)
    for x, y in zip(h, h1):
        assert _rel(x, y) < 1e-6


def _identity_do_problem(L, seed, causal, scale):
    """One head, L rows, peaky scores, V of width L and dO = I, so that dV[j, i] = W~_ij: the
    sampled matrix can be read off dV. (q, k, v, do, out, lse)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 1, L, 16, generator=g) * 1.5
    k = torch.randn(1, 1, L, 16, generator=g)
    v = torch.randn(1, 1, L, L, generator=g)
    do = torch.eye(L).reshape(1, 1, L, L)
    out, lse = reference.forward(q, k, v, None, causal, scale)
    return q, k, v, do, out, lse


@pytest.mark.parametrize("causal", [False, True])
def test_keep_probabilities_exact(K, causal):
    """With dO = I, dV[j, i] = W~_ij: read the sampled matrix off dV. Each entry must be kept with
    probability min(1, c W_ij) (binomial test over seeds) and weighted by W_ij / q_ij."""
    L, c, N = 32, 4.0, 160
    s = 0.25
    q, k, v, do, out, lse = _identity_do_problem(L, 7, causal, s)
    logits = (q[0, 0].double() @ k[0, 0].double().T) * s
    if causal:
        logits = logits.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    W = torch.softmax(logits, -1)
    qk = torch.clamp(c * W, max=1.0)
    qg = torch.ceil(qk * 2.0 ** 23) / 2.0 ** 23
    kept = torch.zeros(L, L, dtype=torch.float64)
    for n in range(N):
        dv = K.sus_backward(do, q, k, v, None, out, lse, causal, s, c, 5000 + n)[2]
        wt = dv[0, 0].double().T  # [i, j]
        kk = wt != 0
        kept += kk
        # weights: W / q' on kept entries, q' = ceil(q 2^23) / 2^23 (the grid of the uniforms)
        assert torch.allclose(wt[kk], (W / qg)[kk], rtol=5e-5, atol=0)
    inner = (qk > 0) & (qk < 1)
    assert torch.all(kept[qk == 1] == N)
    assert torch.all(kept[W == 0] == 0)
    # Entries of one column in one query block share their uniform (comonotone), so z-scores of
    # different entries are correlated: test each entry's binomial marginal on its own.
    big = inner & (N * qk * (1 - qk) >= 5)
    p = qk[big]
    z = (kept[big] - N * p) / torch.sqrt(N * p * (1 - p))
    assert int(big.sum()) >= 20 and float(z.abs().max()) < 5.0, z
    # the rare entries together, against the perfectly-correlated bound on the sd of their total
    rare = inner & ~big
    p = qk[rare]
    zr = (float(kept[rare].sum()) - float(N * p.sum())) / float(torch.sqrt(N * p * (1 - p)).sum())
    assert abs(zr) < 3.0, zr
    # kept per row: expected sum_j q_ij <= c (mean over N draws, sd <= sqrt(c / N))
    assert float(kept.sum(1).max()) / N <= c + 4 * math.sqrt(c / N)


def test_unbiased_gradients(K):
    """Mean over seeds against the exact gradient, on random projections (standard errors from the draws)."""
    q, k, v, do, m, out, lse, s = _problem(H=2, Lq=40, Lk=40, causal=True, qscale=2.0, seed=3)
    ex = reference.backward(do, q, k, v, out, lse, None, True, s, float("inf"), 1)[:3]
    N = 120
    draws = [K.sus_backward(do, q, k, v, None, out, lse, True, s, 4.0, 9000 + n) for n in range(N)]
    g = torch.Generator().manual_seed(1)
    for idx in range(3):
        X = torch.stack([d[idx] for d in draws]).double() - ex[idx].double()
        P = torch.randn((8,) + tuple(ex[idx].shape), generator=g, dtype=torch.float64)
        proj = torch.einsum("nabcd,pabcd->np", X, P)
        z = proj.mean(0) / (proj.std(0) / math.sqrt(N))
        assert float(z.abs().max()) < 4.5, z
        assert float(X.abs().mean()) > 0  # it is stochastic


def test_op_routes_to_kernels(K):
    """sus_attention on CPU with the interpreter enabled goes through dispatch -> the Triton backward."""
    import sus_fx
    from sus_fx.kernels import dispatch
    q, k, v, do, m, out, lse, s = _problem(H=2, Hkv=2, Lq=24, Lk=24)
    called = {}
    orig = K.sus_backward

    def spy(*a, **kw):
        called["n"] = called.get("n", 0) + 1
        return orig(*a, **kw)

    K.sus_backward = spy
    try:
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        sus_fx.sus_attention(qq, kk, vv, is_causal=True, c=float("inf")).backward(do)
    finally:
        K.sus_backward = orig
    assert called.get("n") == 1
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    torch.nn.functional.scaled_dot_product_attention(qr, kr, vr, is_causal=True).backward(do)
    for a, b in ((qq.grad, qr.grad), (kk.grad, kr.grad), (vv.grad, vr.grad)):
        assert _rel(a, b) < 1e-5
    # stats: kept per row is recorded from the kernel
    with sus_fx.stats() as rec:
        qq.grad = None
        sus_fx.sus_attention(qq, kk, vv, is_causal=True, c=2.0).backward(do)
    assert rec.records and 0 < rec.records[-1].kept_per_row_mean <= 2.0 + 1.0


def test_stats_record_unions_and_blocks_over_capacity(K):
    """sus_fx.stats() records each row block's union size from the kernels and counts the blocks
    whose union is over the capacity (they take the all-columns path)."""
    import sus_fx
    q, k, v, do, m, out, lse, s = _problem(H=2, Hkv=2, Lq=48, Lk=48, qscale=3.0)
    K._OVERRIDE["debug"] = "union_only"
    try:
        K.sus_backward(do, q, k, v, None, out, lse, True, s, 2.0, 9)
        unions = K._DEBUG["cnt"].clone()
    finally:
        del K._OVERRIDE["debug"]
    n_blocks = 2 * 48 // 16
    assert unions.numel() == n_blocks and int(unions.max()) > 4
    for cap, over in ((None, 0), (4, int((unions > 4).sum()))):
        if cap is not None:
            K._OVERRIDE["U_cap"] = cap
        try:
            with sus_fx.stats() as rec:
                qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
                # the op's own seed: unions differ from the run above, so only bounds are checked
                sus_fx.sus_attention(qq, kk, vv, is_causal=True, c=2.0).backward(do)
        finally:
            K._OVERRIDE.pop("U_cap", None)
        r = rec.records[-1]
        assert r.blocks == n_blocks and r.capacity == (cap or K.union_capacity(2.0, 48, 16))
        assert 1 <= r.union_per_block_mean <= r.union_max <= 48
        summary = rec.summary()
        assert summary["union_per_block_max"] == r.union_max
        if cap is None:
            assert r.blocks_over_capacity == 0 and summary["fraction_blocks_over_capacity"] == 0.0
        else:
            assert r.blocks_over_capacity > 0
            assert summary["fraction_blocks_over_capacity"] == r.blocks_over_capacity / n_blocks
        assert "of blocks over capacity" in repr(rec)
    # the counts sus_backward hands the recorder are the union kernels' (same seed as above)
    res = K.sus_backward(do, q, k, v, None, out, lse, True, s, 2.0, 9, want_kept=True)
    cnt, cap = res[4]
    assert torch.equal(cnt, unions) and cap == K.union_capacity(2.0, 48, 16)
    assert K.sus_backward(do, q, k, v, None, out, lse, True, s, float("inf"), 9, want_kept=True)[4] is None


def test_triton_op_eager_matches_host_code(K):
    """Called eagerly, the triton_op runs the same host code as sus_backward: bitwise equal."""
    from sus_fx.kernels import triton_op  # noqa: F401
    q, k, v, do, m, out, lse, s = _problem(H=2, Hkv=2, Lq=24, Lk=24, mask="bool", seed=5)
    seed = torch.tensor([1, 12345], dtype=torch.int64)
    a = torch.ops.sus.attention_backward_triton(do, q, k, v, m, out, lse, seed, False, s, 3.0, 7)
    b = K.sus_backward(do, q, k, v, m, out, lse, False, s, 3.0, (seed, 1, 7), deterministic=False)
    for x, y in zip(a, b):
        assert torch.equal(x, y)



def test_union_lists_hold_every_kept_column(K):
    """Each block's union is listed in ascending order, holds every column a row of the block
    keeps (read off dV with dO = I), and a block whose tile list overflows is marked so (count
    above the capacity) and takes the all-columns path: same decisions, same gradients."""
    L, c, BM = 48, 4.0, 16
    q, k, v, do, out, lse = _identity_do_problem(L, 11, True, 0.25)
    K._OVERRIDE["debug"] = "stats"
    try:
        dv = K.sus_backward(do, q, k, v, None, out, lse, True, 0.25, c, 77)[2]
        cnt, cols, cap = K._DEBUG["cnt"].clone(), K._DEBUG["cols"].clone(), K._DEBUG["U_cap"]
        K._OVERRIDE["T_cap"] = 1
        dv1 = K.sus_backward(do, q, k, v, None, out, lse, True, 0.25, c, 77)[2]
        cnt1 = K._DEBUG["cnt"].clone()
    finally:
        K._OVERRIDE.pop("debug")
        K._OVERRIDE.pop("T_cap", None)
    kept = dv[0, 0].T != 0  # [i, j]
    for rb in range(L // BM):
        n = int(cnt[rb])
        assert 0 < n <= cap
        listed = cols[rb * cap: rb * cap + n].tolist()
        assert listed == sorted(set(listed)) and max(listed) < (rb + 1) * BM
        need = set(torch.nonzero(kept[rb * BM:(rb + 1) * BM].any(0)).flatten().tolist())
        assert need <= set(listed), (rb, need - set(listed))
    tiles = [len({j // 16 for j in cols[rb * cap: rb * cap + int(cnt[rb])].tolist()}) for rb in range(L // BM)]
    assert any(t > 1 for t in tiles)
    for rb, t in enumerate(tiles):
        assert (int(cnt1[rb]) > cap) == (t > 1)
    assert torch.allclose(dv1, dv, rtol=1e-6, atol=1e-7)


def test_tile_shift_hash_is_lowbias32(K):
    """The per-tile lattice shift R_t = mix32(key ^ t) is lowbias32 computed in uint32 (a promotion
    to int64 would change every value and break its bijectivity, hence exact uniformity)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _mix(X, Y, N: tl.constexpr):
        i = tl.arange(0, N)
        # (the module by name: inside a jitted function, K would be this file's fixture)
        tl.store(Y + i, sys.modules["sus_fx.kernels.sus_bwd"]._mix32(tl.load(X + i).to(tl.uint32)).to(tl.int64)
                 & 0xFFFFFFFF)

    def lowbias32(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    xs = torch.tensor([0, 1, 2, 12345, 2 ** 31 - 1, -1, -2 ** 31, 987654321], dtype=torch.int32)
    ys = torch.empty(8, dtype=torch.int64)
    _mix[(1,)](xs, ys, N=8)
    assert ys.tolist() == [lowbias32(int(x) & 0xFFFFFFFF) for x in xs.tolist()]


def test_block_keys_kernel_matches_block_key(K):
    """The Gluon union kernel reads each block's random key from _block_keys_kernel; the Triton
    kernels compute it inline with _block_key. Both must give the same word, or the two phases
    would sample different uniforms (a biased estimator)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _inline(Y, seed, n_rb, N: tl.constexpr):
        bh = tl.program_id(0)
        for rb in range(0, n_rb):
            r = sys.modules["sus_fx.kernels.sus_bwd"]._block_key(seed, bh, rb)
            tl.store(Y + bh * n_rb + rb + tl.arange(0, 1), r.to(tl.int32, bitcast=True))

    n_rb, BH = 5, 3
    seeds = torch.tensor([0, 12345678901], dtype=torch.int64)
    for seed_ptr, seed in ((False, 987654321), (True, 17)):
        keys = torch.empty(BH * n_rb, dtype=torch.int32)
        K._block_keys_kernel[(1, BH)](keys, seeds, 1, seed, n_rb, SEED_PTR=seed_ptr, R=8)
        want = torch.empty(BH * n_rb, dtype=torch.int32)
        _inline[(BH,)](want, (12345678901 + seed) if seed_ptr else seed, n_rb, N=1)
        assert torch.equal(keys, want)
        assert len(set(keys.tolist())) == BH * n_rb


def test_union_capacity_is_rows_times_c(K):
    """BM * c slots per block (a power of two, at least 64), fewer only where Lk is smaller: a
    block's union is at most the sum of its rows' kept counts, whose mean is <= c per row. 64 c
    (until stop 16) was overrun in GPT training at c = 8 (H200)."""
    assert K.union_capacity(8.0, 8192, 128) == 1024
    assert K.union_capacity(32.0, 16384, 128) == 4096
    assert K.union_capacity(32.0, 2048, 128) == 2048  # the keys bound it
    assert K.union_capacity(6.0, 8192, 128) == 1024  # 768 -> the next power of two
    assert K.union_capacity(8.0, 8192, 64) == 512
    assert K.union_capacity(0.25, 8192, 128) == 64
