"""The SUS kernels on a CUDA GPU: forward paths, exact backward, unbiasedness, reproducibility.

Skipped without CUDA (CI); run on the H100 through the device tool:
    python3 -m pytest -q tests/test_kernels_gpu.py
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

if torch.cuda.is_available():
    import sus_fx
    from sus_fx import reference
    from sus_fx.kernels import dispatch, sus_bwd


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _inputs(B, H, Hkv, L, D, dtype, seed=0, Lk=None, Dv=None, qscale=1.0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    Lk = Lk or L
    Dv = Dv or D
    q = (torch.randn(B, H, L, D, device="cuda", generator=g) * qscale).to(dtype)
    k = torch.randn(B, Hkv, Lk, D, device="cuda", generator=g).to(dtype)
    v = torch.randn(B, Hkv, Lk, Dv, device="cuda", generator=g).to(dtype)
    do = torch.randn(B, H, L, Dv, device="cuda", generator=g).to(dtype)
    return q, k, v, do


def _mask(kind, B, H, L, Lk, seed=1):
    g = torch.Generator(device="cuda").manual_seed(seed)
    if kind == "bool":
        m = torch.rand(B, 1, L, Lk, device="cuda", generator=g) > 0.3
        m[..., 0] = True
        return m
    if kind == "float":
        return torch.randn(1, H, L, Lk, device="cuda", generator=g)
    return None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
@pytest.mark.parametrize("causal", [False, True])
def test_forward_paths(dtype, mask, causal):
    B, H, Hkv, L, D = 2, 4, 2, 200, 64
    q, k, v, _ = _inputs(B, H, Hkv, L, D, dtype, Lk=L)
    m = _mask(mask, B, H, L, L)
    if m is not None and m.dtype != torch.bool:
        m = m.to(dtype)
    res = dispatch.forward(q, k, v, m, causal, 1 / math.sqrt(D), 0.0)
    assert res is not None
    out, lse = res
    ro, rl = reference.forward(q.double(), k.double(), v.double(), m if m is None or m.dtype == torch.bool
                               else m.double(), causal, 1 / math.sqrt(D))
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert out.shape == ro.shape and lse.shape == rl.shape and lse.dtype == torch.float32
    assert _rel(out, ro) < tol
    assert float((lse.double() - rl).abs().max()) < tol * 10


def test_unaligned_inputs_do_not_disable_a_forward_kernel():
    """dispatch.forward remembers a kernel that failed on some (dtype, head dims, causal) and skips
    it from then on, except after a failure on misaligned inputs (a 2-byte offset view): those skip
    cuDNN and flash without marking them, and the aligned call after still gets them."""
    q, k, v, _ = _inputs(1, 2, 2, 256, 64, torch.bfloat16)
    buf = torch.empty(q.numel() + 1, dtype=q.dtype, device=q.device)
    q_off = buf[1:].view(q.shape).copy_(q)
    before = set(dispatch._failed)
    res_off = dispatch.forward(q_off, k, v, None, True, 0.125, 0.0)
    out, lse = dispatch.forward(q, k, v, None, True, 0.125, 0.0)
    assert set(dispatch._failed) == before
    ro, rl = reference.forward(q.double(), k.double(), v.double(), None, True, 0.125)
    assert _rel(out, ro) < 1e-2
    if res_off is not None:
        assert _rel(res_off[0], ro) < 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask", [None, "bool"])
@pytest.mark.parametrize("D", [64, 128])
def test_exact_backward_matches_sdpa(dtype, causal, mask, D):
    """c = inf through the public op against SDPA's gradients (and both against float64)."""
    B, H, Hkv, L = 1, 4, 2, 384
    q, k, v, do = _inputs(B, H, Hkv, L, D, dtype, Lk=L)
    m = _mask(mask, B, H, L, L)
    grads = {}
    for name in ("sus", "sdpa", "f64"):
        qq, kk, vv = (t.clone().double() if name == "f64" else t.clone() for t in (q, k, v))
        for t in (qq, kk, vv):
            t.requires_grad_()
        if name == "sus":
            o = sus_fx.sus_attention(qq, kk, vv, m, is_causal=causal, enable_gqa=True, c=float("inf"))
        elif m is not None and causal:  # SDPA refuses a mask together with is_causal
            mc = m & torch.ones(L, L, dtype=torch.bool, device="cuda").tril()
            o = F.scaled_dot_product_attention(qq, kk, vv, mc, enable_gqa=True)
        else:
            o = F.scaled_dot_product_attention(qq, kk, vv, m, is_causal=causal, enable_gqa=True)
        o.backward(do.to(o.dtype))
        grads[name] = (qq.grad, kk.grad, vv.grad)
    for i in range(3):
        e_sus = _rel(grads["sus"][i], grads["f64"][i])
        e_sdpa = _rel(grads["sdpa"][i], grads["f64"][i])
        assert e_sus <= 2 * e_sdpa + (1e-5 if dtype == torch.float32 else 2e-3), (i, e_sus, e_sdpa)


def test_int64_offsets():
    """Row strides past 2^31 elements (views into an 8.6 GB buffer) must index correctly."""
    L, D, S = 4096, 64, 1 << 20
    bufs = [torch.empty(L, S, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
    g = torch.Generator(device="cuda").manual_seed(0)
    for b in bufs:
        b[:, :D] = torch.randn(L, D, device="cuda", generator=g).to(torch.bfloat16)
    q, k, v, do = (b[:, :D].view(1, 1, L, D) for b in bufs)
    assert q.stride(2) * (L - 1) > 2 ** 31
    s = 1 / math.sqrt(D)
    o, lse = dispatch.forward(q.contiguous(), k.contiguous(), v.contiguous(), None, True, s, 0.0)
    got = sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, s, 32.0, 5)
    ref = sus_bwd.sus_backward(do.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(), None, o, lse,
                               True, s, 32.0, 5)
    del bufs
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-2


def test_long_sequence_finite():
    """n = 128k, c = 32: finite, every row block and key range written."""
    B, H, L, D = 1, 2, 131072, 64
    q, k, v, do = _inputs(B, H, H, L, D, torch.bfloat16)
    o, lse = dispatch.forward(q, k, v, None, True, 1 / math.sqrt(D), 0.0)
    g = sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, 1 / math.sqrt(D), 32.0, 5)
    for a in g:
        assert torch.isfinite(a).all()
    # (the last keys are seen by few rows, each with weight ~1/n: their dV is legitimately often 0)
    assert g[0][0, :, -64:].abs().sum() > 0 and g[2][0, :, :64].abs().sum() > 0 and g[1][0, :, :64].abs().sum() > 0


def _grads(q, k, v, do, m, causal, c, seed, **kw):
    D = q.shape[-1]
    o, lse = dispatch.forward(q, k, v, m, causal, 1 / math.sqrt(D), 0.0)
    return sus_bwd.sus_backward(do, q, k, v, m, o, lse, causal, 1 / math.sqrt(D), c, seed, **kw)


def test_seed_reproducible_deterministic_mode_and_overflow_path():
    q, k, v, do = _inputs(1, 4, 2, 1000, 64, torch.bfloat16)
    a = _grads(q, k, v, do, None, True, 16.0, 77)
    b = _grads(q, k, v, do, None, True, 16.0, 77)
    assert torch.equal(a[0], b[0])  # dq has no atomics
    for x, y in zip(a, b):
        assert _rel(x, y) < 1e-2  # dk, dv: float atomics, order-dependent sums (bf16 outputs)
    d1 = _grads(q, k, v, do, None, True, 16.0, 77, deterministic=True)
    d2 = _grads(q, k, v, do, None, True, 16.0, 77, deterministic=True)
    for x, y, z in zip(d1, d2, a):
        assert torch.equal(x, y)
        assert _rel(x, z) < 1e-2
    sus_bwd._OVERRIDE["U_cap"] = 64  # forces many blocks down the all-columns path
    try:
        e = _grads(q, k, v, do, None, True, 16.0, 77)
    finally:
        del sus_bwd._OVERRIDE["U_cap"]
    for x, y in zip(a, e):
        assert _rel(x, y) < 1e-2
    with torch.inference_mode(False):
        torch.use_deterministic_algorithms(True)
        try:
            f = _grads(q, k, v, do, None, True, 16.0, 77)
        finally:
            torch.use_deterministic_algorithms(False)
    for x, y in zip(d1, f):
        assert torch.equal(x, y)


@pytest.mark.parametrize("D,mask,qscale,fold", [(128, None, 1.0, 0), (128, None, 4.0, 0), (64, None, 4.0, 0),
                                                (64, "float", 2.0, 0), (128, "bool", 2.0, 0),
                                                (128, None, 4.0, 1), (64, None, 4.0, 1), (64, None, 1.0, 1)])
def test_union_misses_no_kept_column(D, mask, qscale, fold):
    """On the tensor cores: every row's kept count through the unions equals the all-columns
    path's (U_cap = 1 sends every block there; it decides from its own S alone), so no kept
    column is missing from a union: the margin covers the difference between the two passes'
    MMAs. Peaky scores make the margin matter. fold=1: the Gluon union with -lse2 / a added by
    its MMA (FOLD; skipped where the Gluon kernel does not run)."""
    q, k, v, do = _inputs(1, 4, 2, 1500, D, torch.bfloat16, seed=7, qscale=qscale)
    if fold:
        _sm90_or_skip(q, k, v)
    causal = mask is None
    m = _mask(mask, 1, 4, 1500, 1500)
    counts = {}
    for name, ov in (("unions", {"FOLD": fold}), ("all columns", {"U_cap": 1})):
        sus_bwd._OVERRIDE.update(ov)
        try:
            counts[name] = _grads(q, k, v, do, m, causal, 16.0, 5, want_kept=True)[3]
        finally:
            for key in ov:
                del sus_bwd._OVERRIDE[key]
    assert int(counts["all columns"].sum()) > 0
    assert torch.equal(counts["unions"], counts["all columns"])


def _union_sets(q, k, v, do, causal, c, seed, sm90, fold=0, pair=None, **cfg):
    """Per block, the set of union columns phase (a) found (SM90=1: the Gluon kernel; fold: its FOLD;
    pair: its PAIR, K two tiles per TMA; None: the config's choice; cfg: other config keys)."""
    sus_bwd._OVERRIDE.update(SM90=sm90, debug="union_only", FOLD=fold, **cfg)
    if pair is not None:
        sus_bwd._OVERRIDE["PAIR"] = pair
    try:
        _grads(q, k, v, do, None, causal, c, seed)
        cnt, cols, U_cap = sus_bwd._DEBUG["cnt"].cpu(), sus_bwd._DEBUG["cols"].cpu(), sus_bwd._DEBUG["U_cap"]
    finally:
        sus_bwd._OVERRIDE.clear()
    cols = cols.view(-1, U_cap)
    return [frozenset(cols[i, :min(int(n), U_cap)].tolist()) if n <= U_cap else ("overflow", int(n))
            for i, n in enumerate(cnt)]


def _sm90_or_skip(q, k, v):
    uh = sus_bwd._sm90_union()
    if uh is None or not uh.supported(q, k, v, None, False):
        pytest.skip("the Gluon union kernel needs an sm_90 GPU and Triton's Gluon")


@pytest.mark.parametrize("B,H,Hkv,L,Lk,D,dtype,causal,k_bshd", [
    (1, 4, 2, 1500, None, 128, torch.bfloat16, True, False),   # GQA, a length that is no multiple of a tile
    (2, 2, 2, 700, None, 64, torch.float16, True, True),       # K a transposed [B, L, H, D] tensor
    (1, 2, 1, 384, 1000, 64, torch.bfloat16, False, False),    # Lq != Lk
    (1, 1, 1, 100, None, 128, torch.bfloat16, True, False),    # one block, one or two tiles
    (1, 1, 1, 130, None, 64, torch.bfloat16, True, False),     # two blocks: the tail's one- and two-tile ends
    (2, 3, 3, 3000, None, 128, torch.bfloat16, True, True),
])
def test_sm90_union_matches_triton_union(B, H, Hkv, L, Lk, D, dtype, causal, k_bshd):
    """The Gluon phase (a), with and without FOLD, finds the unions the Triton kernel finds. All
    compute S on wgmma in fp32; a column whose threshold test sits within rounding of the other
    kernel's may differ, which the margin makes harmless (a union only needs to be a superset;
    test_union_misses_no_kept_column checks that). Without FOLD: at most 1% of blocks differ. FOLD's
    margin is wider by a * gamma * 2 max|lse2 / a| (~7e-4 in log2 units at D = 128): on the H200 it
    changed the unions of 9 of 48 and 35 of 144 blocks, so there at most 1% of the union columns."""
    q, k, v, do = _inputs(B, H, Hkv, L, D, dtype, seed=11, Lk=Lk, qscale=2.0)
    if k_bshd:  # the layout models get from q.view(B, L, H, D).transpose(1, 2): a 4-D TMA descriptor
        k = k.transpose(1, 2).contiguous().transpose(1, 2)
    _sm90_or_skip(q, k, v)
    b = _union_sets(q, k, v, do, causal, 16.0, 5, 0)
    assert sum(len(x) if isinstance(x, frozenset) else x[1] for x in b) > 0
    for fold in (0, 1):
        a = _union_sets(q, k, v, do, causal, 16.0, 5, 1, fold)
        assert len(a) == len(b)
        if not fold:
            diff = sum(x != y for x, y in zip(a, b))
            assert diff <= max(1, len(a) // 100), (diff, len(a))
        else:
            # a block overflows (takes all columns) in both or in neither; where both list their
            # union, the lists differ by at most 1% of their columns
            status = sum(isinstance(x, frozenset) != isinstance(y, frozenset) for x, y in zip(a, b))
            assert status <= max(1, len(a) // 100), (status, len(a))
            sets = [(x, y) for x, y in zip(a, b) if isinstance(x, frozenset) and isinstance(y, frozenset)]
            cols = sum(len(y) for _, y in sets)
            diff = sum(len(x ^ y) for x, y in sets)
            assert diff <= max(2, cols // 100), (diff, cols)


@pytest.mark.parametrize("B,H,Hkv,L,Lk,D,causal", [
    (1, 4, 2, 1500, None, 64, True),     # GQA; the last block's hi (1500) cuts its last pair
    (1, 2, 1, 384, 1000, 64, False),     # non-causal: 15 full tiles (odd) and a partial one
    (1, 1, 1, 130, None, 64, True),      # two blocks: a pair, then a pair whose second tile is past hi
    (1, 1, 1, 100, None, 64, True),      # one block, one tile
    (1, 2, 2, 900, 4096, 64, False),     # 64 tiles: many pairs through a ring of 3 buffers
    (1, 2, 2, 1000, None, 128, True),    # PAIR at D = 128 too (one CTA per SM there, but correct)
])
def test_sm90_union_pairs_match_single_tiles(B, H, Hkv, L, Lk, D, causal):
    """PAIR (K loaded two tiles per TMA, the default at D = 64) changes how K reaches shared memory,
    not the arithmetic: its unions are the single-tile kernel's, bit for bit, including where a run
    of tiles is odd and a pair's second tile lies past the block's keys."""
    q, k, v, do = _inputs(B, H, Hkv, L, D, torch.bfloat16, seed=13, Lk=Lk, qscale=2.0)
    _sm90_or_skip(q, k, v)
    single = _union_sets(q, k, v, do, causal, 8.0, 7, 1, 1, pair=0)
    assert sum(len(x) if isinstance(x, frozenset) else x[1] for x in single) > 0
    assert _union_sets(q, k, v, do, causal, 8.0, 7, 1, 1, pair=1) == single
    # three CTAs per SM (ptxas limited to 168 registers; the expansion spills, the loop does not)
    assert _union_sets(q, k, v, do, causal, 8.0, 7, 1, 1, pair=1, MAXNREG=168) == single


def test_sm90_union_direct_launch_matches_a_binder_launch():
    """After the first launch of an argument class, union_hopper launches the cached CompiledKernel
    without Triton's binder (host time). Its unions are the binder's, bit for bit; a length that
    changes an argument's class (1000 -> 1008 rows: a multiple of 16, which Triton specializes on)
    gets a kernel of its own, launched through the binder first."""
    from sus_fx.kernels import union_hopper as uh
    uh._compiled.clear()
    n = None
    for L in (1000, 1008):
        q, k, v, do = _inputs(1, 4, 2, L, 64, torch.bfloat16, seed=5, qscale=2.0)
        _sm90_or_skip(q, k, v)
        first = _union_sets(q, k, v, do, True, 8.0, 3, 1, 1)   # through the binder, then cached
        assert len(uh._compiled) == (1 if n is None else n + 1)
        n = len(uh._compiled)
        again = _union_sets(q, k, v, do, True, 8.0, 3, 1, 1)   # the cached kernel, launched directly
        assert again == first and len(uh._compiled) == n


def test_sm90_union_gradients_and_zeroed_accumulators():
    """Through the whole backward: the same seed gives the same gradients with either phase (a)
    (dK/dV accumulators zeroed by the Gluon kernel), twice in a row (no stale accumulator)."""
    q, k, v, do = _inputs(1, 4, 2, 1000, 128, torch.bfloat16, seed=3)
    _sm90_or_skip(q, k, v)
    res = {}
    for sm90 in (1, 0, 1):
        sus_bwd._OVERRIDE["SM90"] = sm90
        try:
            res.setdefault(sm90, []).append(_grads(q, k, v, do, None, True, 16.0, 9))
        finally:
            sus_bwd._OVERRIDE.clear()
    for x, y, z in zip(res[1][0], res[0][0], res[1][1]):
        assert _rel(x, y) < 1e-2 and _rel(z, y) < 1e-2


@pytest.mark.parametrize("causal", [False, True])
def test_keep_probabilities_exact(causal):
    """dO = I makes dV[j, i] = W~_ij: each entry is kept with probability min(1, c W_ij) and weighted
    by W / q' (fp32 run, so the sampled matrix is read exactly)."""
    L, D, c, N = 128, 64, 8.0, 400
    g = torch.Generator(device="cuda").manual_seed(3)
    q = torch.randn(1, 1, L, D, device="cuda", generator=g) * 2
    k = torch.randn(1, 1, L, D, device="cuda", generator=g)
    v = torch.randn(1, 1, L, L, device="cuda", generator=g)
    do = torch.eye(L, device="cuda").reshape(1, 1, L, L)
    s = 1 / math.sqrt(D)
    logits = (q[0, 0].double() @ k[0, 0].double().T) * s
    if causal:
        logits = logits.masked_fill(torch.ones(L, L, dtype=torch.bool, device="cuda").triu(1), float("-inf"))
    W = torch.softmax(logits, -1)
    qk = torch.clamp(c * W, max=1.0)
    qg = torch.ceil(qk * 2.0 ** 23) / 2.0 ** 23
    o, lse = dispatch.forward(q, k, v, None, causal, s, 0.0)
    kept = torch.zeros(L, L, dtype=torch.float64, device="cuda")
    for n in range(N):
        wt = sus_bwd.sus_backward(do, q, k, v, None, o, lse, causal, s, c, 100 + n)[2][0, 0].double().T
        kk = wt != 0
        kept += kk
        # W here is float64 from the inputs; the kernel's W uses the forward kernel's LSE (fp32 efficient
        # attention, ~1e-4 relative): the weights agree to that precision
        rel = ((wt[kk] - (W / qg)[kk]).abs() / (W / qg)[kk]).max()
        assert rel < 2e-3, float(rel)
    inner = (qk > 0) & (qk < 1)
    assert torch.all(kept[qk == 1] == N)
    big = inner & (N * qk * (1 - qk) >= 5)
    p = qk[big]
    z = (kept[big] - N * p) / torch.sqrt(N * p * (1 - p))
    assert int(big.sum()) > 100 and float(z.abs().max()) < 5.5, float(z.abs().max())
    rare = inner & ~big
    p = qk[rare]
    zr = (float(kept[rare].sum()) - float(N * p.sum())) / float(torch.sqrt(N * p * (1 - p)).sum())
    assert abs(zr) < 3.0
    assert float(kept.sum(1).max()) / N <= c + 4 * math.sqrt(c / N)


@pytest.mark.parametrize("mask", [None, "float"])
def test_unbiased_gradients(mask):
    """Mean over seeds against the exact gradient (projections; standard errors from the draws)."""
    B, H, Hkv, L, D, c, N = 1, 2, 1, 512, 64, 8.0, 96
    q, k, v, do = _inputs(B, H, Hkv, L, D, torch.float32, qscale=2.0)
    m = _mask(mask, B, H, L, L)
    ex = _grads(q, k, v, do, m, True, float("inf"), 0)
    draws = [_grads(q, k, v, do, m, True, c, 1000 + n) for n in range(N)]
    g = torch.Generator(device="cuda").manual_seed(9)
    for i in range(3):
        X = torch.stack([d[i] for d in draws]).double() - ex[i].double()
        P = torch.randn((16,) + tuple(ex[i].shape), device="cuda", generator=g, dtype=torch.float64)
        proj = torch.einsum("nabcd,pabcd->np", X, P)
        z = proj.mean(0) / (proj.std(0) / math.sqrt(N))
        assert float(z.abs().max()) < 5.0, z
        assert float(X.abs().mean()) > 0


def test_stats_kept_per_row():
    q, k, v, do = _inputs(1, 4, 4, 2048, 64, torch.bfloat16)
    for t in (q, k, v):
        t.requires_grad_()
    with sus_fx.stats() as rec:
        sus_fx.sus_attention(q, k, v, is_causal=True, c=16.0).backward(do)
    r = rec.records[-1]
    assert 8.0 < r.kept_per_row_mean <= 16.0 + 0.5
    assert r.fraction_cut > 0.9
    # unions of 128-row blocks on random inputs: ~ 8.7 c (H200), none over the capacity (128 c)
    assert r.blocks == 4 * 2048 // 128 and r.capacity == 2048
    assert 16.0 <= r.union_per_block_mean <= 16 * 16.0 and r.blocks_over_capacity == 0


def _capture_backend(bw_graphs):
    from torch._dynamo.backends.common import aot_autograd

    def bw_compiler(gm, example_inputs):
        bw_graphs.append(gm)
        return gm.forward
    return aot_autograd(fw_compiler=lambda gm, ex: gm.forward, bw_compiler=bw_compiler)


def _seeded_grads(fn, q, k, v, do, seed=11):
    torch.manual_seed(seed)
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    fn(qq, kk, vv).backward(do)
    return qq.grad, kk.grad, vv.grad


def test_compiled_backward_traces_the_kernels():
    """Under torch.compile the CUDA backward is sus::attention_backward_triton, traced into its
    Triton launches: key L1 norms, union, union expansion, sparse backward; on an sm_90 GPU three
    (key L1 norms, block keys, sparse backward) around the opaque Gluon op sus::union_sm90, which
    lists the union's columns itself. No opaque attention op in the backward graph; same seed ->
    the eager path's masks."""
    import torch._dynamo
    q, k, v, do = _inputs(1, 4, 2, 1024, 64, torch.bfloat16)

    def f(q, k, v):
        return sus_fx.sus_attention(q, k, v, is_causal=True, enable_gqa=True, c=8.0)

    bw_graphs = []
    torch._dynamo.reset()
    got = _seeded_grads(torch.compile(f, backend=_capture_backend(bw_graphs), fullgraph=True), q, k, v, do)
    want = _seeded_grads(f, q, k, v, do)
    exact = _seeded_grads(lambda q, k, v: sus_fx.sus_attention(q, k, v, is_causal=True, enable_gqa=True,
                                                               c=float("inf")), q, k, v, do)
    assert len(bw_graphs) == 1
    targets = [str(n.target) for n in bw_graphs[0].graph.nodes if n.op == "call_function"]
    uh = sus_bwd._sm90_union()
    on_sm90 = uh is not None and uh.supported(q, k, v, None, False)
    assert sum("triton_kernel_wrapper" in t for t in targets) == (3 if on_sm90 else 4), targets
    assert sum("union_sm90" in t for t in targets) == (1 if on_sm90 else 0), targets
    assert not any("sus.attention_backward" in t for t in targets), targets
    for a, b, e in zip(got, want, exact):
        # same masks: equal up to the order of fp32 atomics, far closer than to the exact gradient
        assert _rel(a, b) < 1e-2 and _rel(a, e) > 5 * _rel(a, b), (_rel(a, b), _rel(a, e))
    # through Inductor: the kernels are launched from its generated code
    torch._dynamo.reset()
    ind = _seeded_grads(torch.compile(f, fullgraph=True), q, k, v, do)
    for a, b in zip(ind, want):
        assert _rel(a, b) < 1e-2


def test_compiled_dynamic_lengths_one_compile():
    """dynamic=True: varying lengths, one compile, exact grads at c=inf (torch < 2.13 keeps the opaque
    op for symbolic shapes, see ops._TRACED_LAUNCH_NEEDS_STATIC_SHAPES)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounterWithBackend
    cnt = CompileCounterWithBackend("inductor")
    torch._dynamo.reset()

    def f(q, k, v):
        return sus_fx.sus_attention(q, k, v, is_causal=True, c=float("inf"))

    cf = torch.compile(f, backend=cnt, dynamic=True)
    for L in (256, 384, 640):
        q, k, v, do = _inputs(1, 2, 2, L, 64, torch.bfloat16, seed=L)
        got = _seeded_grads(cf, q, k, v, do)
        ref = _seeded_grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v, do)
        for a, b in zip(got, ref):
            assert _rel(a, b) < 2e-2
    assert cnt.frame_count == 1


@pytest.mark.parametrize("case", ["bool_mask", "float_mask", "fp16_d96", "fp32_noncausal_gqa"])
def test_compiled_matches_eager_same_seed(case):
    """The traced backward (Inductor launches the kernels) against the eager one, same seed, for
    masks, another head dim and dtype, fp32 (the IEEE dots), GQA without causal: the compiled path
    is where torch retypes float arguments and analyses the kernels' writes."""
    import torch._dynamo
    dtype = {"fp16_d96": torch.float16, "fp32_noncausal_gqa": torch.float32}.get(case, torch.bfloat16)
    D = 96 if case == "fp16_d96" else 64
    Hkv = 2 if case == "fp32_noncausal_gqa" else 4
    L = 384
    q, k, v, do = _inputs(1, 4, Hkv, L, D, dtype, seed=5)
    mask = _mask(case.split("_")[0], 1, 4, L, L) if case.endswith("mask") else None
    causal = case in ("fp16_d96",)

    def f(q, k, v):
        return sus_fx.sus_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=Hkv != 4, c=8.0)

    torch._dynamo.reset()
    got = _seeded_grads(torch.compile(f, fullgraph=True), q, k, v, do)
    want = _seeded_grads(f, q, k, v, do)
    exact = _seeded_grads(lambda q, k, v: sus_fx.sus_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                               enable_gqa=Hkv != 4, c=float("inf")), q, k, v, do)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    for a, b, e in zip(got, want, exact):
        assert torch.isfinite(a).all()
        assert _rel(a, b) < tol and _rel(a, e) > 5 * _rel(a, b), (case, _rel(a, b), _rel(a, e))
