"""Fuzzing the passes with random attention code forms and random small shapes (hypothesis).

Each example builds an attention function from random choices (closures, no exec):

    call      F.scaled_dot_product_attention  vs  explicit softmax(q k^T) @ v
    layout    4-D [B, H, L, E]  vs  3-D [B*H, L, E]
    scale     on the scores (mul) / on q / none / div by sqrt(E)   (SDPA: scale= None or a number)
    mask      none / bool via masked_fill(-inf) / additive float / torch.where(finfo.min) / causal
    softmax   plain  vs  dtype=float32 then cast back
    GQA       none / HF repeat_kv / repeat_interleave   (4-D, Hkv dividing H)
    weights   returned with the output or not (returned: must be left alone)

and random shapes (B 1-2, H 1-4, Hkv | H, Lq/Lk 1-9, E 2-16). The function goes through Dynamo
with the cheap capture path (passes/testing.py: no Inductor), then passes.rewrite_attention with
c = inf. Checked: nothing crashes; outputs equal the original graph's (= eager); every candidate
is either rewritten (and then c = inf gradients equal the original's) or left alone with a Skip
that says why; a form the README lists as recognized is rewritten, weights returned are not.

A fixed handful of examples also runs through the real backend (torch.compile(backend="sus")).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from passes import rewrite_attention  # noqa: E402
from passes.testing import assert_close_lists, capture, exact, run_graph, sus_nodes  # noqa: E402

MIN = torch.finfo(torch.float32).min


# ----------------------------------------------------------------------------------------------
# The generated forms

def _repeat_kv(x, n):
    b, hk, s, d = x.shape
    return x[:, :, None, :, :].expand(b, hk, n, s, d).reshape(b, hk * n, s, d)


def _make_mask(kind, lead, Lq, Lk, seed):
    """(mask tensor or None). Bool masks keep key 0 for every row: no fully masked row (fully
    masked rows are a documented divergence of the -inf form, tested in test_passes_zoo.py)."""
    g = torch.Generator().manual_seed(seed)
    if kind in ("bool", "where"):
        keep = torch.rand(*lead, Lq, Lk, generator=g) > 0.4
        keep[..., 0] = True
        return keep
    if kind == "float":
        m = torch.randn(*lead, Lq, Lk, generator=g)
        m[..., 1:] = m[..., 1:].masked_fill(torch.rand(*lead, Lq, Lk - 1, generator=g) > 0.7, MIN)
        return m
    if kind == "causal":
        return torch.ones(Lq, Lk, dtype=torch.bool).tril()
    return None


def build(ch):
    """The attention function and its inputs for one set of choices `ch` (a dict)."""
    B, H, Lq, Lk, E = ch["B"], ch["H"], ch["Lq"], ch["Lk"], ch["E"]
    four_d = ch["layout"] == "4d"
    G = ch["G"] if four_d else 1
    Hkv = H // G
    g = torch.Generator().manual_seed(ch["seed"])
    if four_d:
        shapes = [(B, H, Lq, E), (B, Hkv, Lk, E), (B, Hkv, Lk, E)]
        lead = (B, 1) if ch["mask_bcast"] else (B, H)
    else:
        shapes = [(B * H, Lq, E), (B * H, Lk, E), (B * H, Lk, E)]
        lead = (1,) if ch["mask_bcast"] else (B * H,)
    q, k, v = (torch.randn(*s, generator=g).requires_grad_() for s in shapes)
    mask = _make_mask(ch["mask"], lead, Lq, Lk, ch["seed"] + 1)
    gqa = ch["gqa"] if G > 1 else "none"
    scale_kind, softmax_kind, sdpa = ch["scale"], ch["softmax"], ch["call"] == "sdpa"
    number = ch["number"]

    def expand_kv(k, v):
        if gqa == "repeat_kv":
            return _repeat_kv(k, G), _repeat_kv(v, G)
        if gqa == "repeat_interleave":
            return k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
        return k, v

    def fn_sdpa(q, k, v):
        kw = {}
        if ch["mask"] == "causal":
            kw["is_causal"] = True
        elif ch["mask"] in ("bool", "where", "float"):
            kw["attn_mask"] = mask
        if scale_kind != "none":
            kw["scale"] = number
        if G > 1 and gqa == "none":
            kw["enable_gqa"] = True
        k, v = expand_kv(k, v)
        return F.scaled_dot_product_attention(q, k, v, **kw)

    def fn_explicit(q, k, v):
        k, v = expand_kv(k, v)
        if scale_kind == "q":
            s = (q * number) @ k.transpose(-2, -1)
        else:
            s = q @ k.transpose(-2, -1)
            if scale_kind == "mul":
                s = s * number
            elif scale_kind == "div":
                s = s / math.sqrt(q.size(-1))
        if ch["mask"] == "bool":
            s = s.masked_fill(~mask, float("-inf"))
        elif ch["mask"] == "causal":
            s = s.masked_fill(mask == 0, float("-inf"))
        elif ch["mask"] == "float":
            s = s + mask
        elif ch["mask"] == "where":
            s = torch.where(mask, s, torch.finfo(s.dtype).min)
        if softmax_kind == "fp32":
            w = F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
        else:
            w = torch.softmax(s, dim=-1)
        out = w @ v
        return (out, w) if ch["weights"] else out

    return (fn_sdpa if sdpa else fn_explicit), (q, k, v)


@st.composite
def choices(draw):
    layout = draw(st.sampled_from(["4d", "3d"]))
    H = draw(st.integers(1, 4))
    divisors = [d for d in range(1, H + 1) if H % d == 0]
    call = draw(st.sampled_from(["sdpa", "explicit"]))
    return dict(
        call=call,
        layout=layout,
        B=draw(st.integers(1, 2)),
        H=H,
        G=draw(st.sampled_from(divisors)),
        Lq=draw(st.integers(1, 9)),
        Lk=draw(st.integers(1, 9)),
        E=draw(st.integers(2, 16)),
        scale=draw(st.sampled_from(["mul", "q", "none", "div"])),
        number=draw(st.sampled_from([0.125, 0.3, 0.5, 1.7])),
        mask=draw(st.sampled_from(["none", "bool", "float", "where", "causal"])),
        mask_bcast=draw(st.booleans()),
        softmax=draw(st.sampled_from(["plain", "fp32"])),
        gqa=draw(st.sampled_from(["none", "repeat_kv", "repeat_interleave"])),
        weights=call == "explicit" and draw(st.booleans()),
        seed=draw(st.integers(0, 10_000)),
    )


def check_example(ch):
    fn, args = build(ch)
    # eager reference, straight from the user's function
    eager = fn(*args)
    gm, inputs = capture(fn, *args)
    original = copy.deepcopy(gm)
    result = rewrite_attention(gm, exact)           # must not raise
    sites, skipped = result.sites, result.skipped
    ops = sus_nodes(gm)
    assert len(ops) == len(sites)
    assert len(sites) + len(skipped) == 1, (ch, sites, skipped)   # exactly one candidate, one verdict
    for s in skipped:
        assert s.reason and s.what, s
    if ch["weights"]:
        assert not sites and "users" in skipped[0].reason, (ch, skipped)
    else:
        # every generated non-returning form is one the README lists as recognized
        assert len(sites) == 1, (ch, skipped)
        site = sites[0]
        assert site.c == float("inf")
        if ch["layout"] == "4d":
            assert site.gqa == ch["G"], (ch, site)
        assert site.causal or ch["mask"] != "causal" or site.mask_kind != "none", (ch, site)

    ref_out, ref_grads = run_graph(original, inputs, grad=True)
    out, grads = run_graph(gm, inputs, grad=True)
    # the original graph is the user's function
    eager_flat = [eager] if isinstance(eager, torch.Tensor) else list(eager)
    assert_close_lists([e.detach() for e in eager_flat], ref_out, 1e-6, 1e-6, "capture vs eager")
    assert_close_lists(ref_out, out, 1e-5, 1e-4, f"output {ch}")
    assert_close_lists(ref_grads, grads, 1e-4, 1e-3, f"grad {ch}")


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(choices())
def test_random_attention_forms(ch):
    check_example(ch)


# Hand-picked corners the random draw may miss, checked every run.
CORNERS = [
    dict(call="explicit", layout="4d", B=1, H=4, G=2, Lq=1, Lk=9, E=2, scale="q", number=0.3, mask="where",
         mask_bcast=True, softmax="fp32", gqa="repeat_kv", weights=False, seed=1),
    dict(call="explicit", layout="4d", B=2, H=4, G=4, Lq=9, Lk=3, E=16, scale="div", number=0.3, mask="causal",
         mask_bcast=False, softmax="plain", gqa="repeat_interleave", weights=False, seed=2),
    dict(call="sdpa", layout="4d", B=2, H=4, G=2, Lq=3, Lk=1, E=5, scale="mul", number=1.7, mask="bool",
         mask_bcast=False, softmax="plain", gqa="none", weights=False, seed=3),
    dict(call="explicit", layout="3d", B=2, H=3, G=1, Lq=7, Lk=7, E=3, scale="none", number=0.5, mask="float",
         mask_bcast=True, softmax="fp32", gqa="none", weights=True, seed=4),
]


@pytest.mark.parametrize("i", range(len(CORNERS)))
def test_corner_forms(i):
    check_example(CORNERS[i])


# ----------------------------------------------------------------------------------------------
# A fixed few through the full backend (Inductor): outputs and exact-mode gradients equal eager.

BACKEND_CASES = [
    dict(call="explicit", layout="4d", B=2, H=4, G=2, Lq=5, Lk=7, E=8, scale="mul", number=0.3, mask="where",
         mask_bcast=True, softmax="fp32", gqa="repeat_kv", weights=False, seed=11),
    dict(call="sdpa", layout="3d", B=1, H=2, G=1, Lq=6, Lk=6, E=4, scale="none", number=0.5, mask="causal",
         mask_bcast=False, softmax="plain", gqa="none", weights=False, seed=12),
]


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(BACKEND_CASES)))
def test_backend_sus_exact_equals_eager(i):
    ch = BACKEND_CASES[i]
    fn, args = build(ch)
    reports = []
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="sus", fullgraph=True, options={"c": "exact", "report": reports.append})
    out = compiled(*args)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((out * g).sum(), args)
    ref = fn(*args)
    ref_grads = torch.autograd.grad((ref * g).sum(), args)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    (report,) = reports
    assert len(report.sites) == 1 and report.sites[0].c == float("inf") and not report.skipped
    assert "torch.ops.sus.attention" in report.graph_after
