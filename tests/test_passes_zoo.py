"""A zoo of attention forms, captured with Dynamo and rewritten by passes.rewrite_attention.

Each positive case must be rewritten (site count), and the rewritten graph must give the same
outputs and (with c=inf) the same gradients as the original graph. Each negative case must be left
alone with a Skip whose reason names the problem.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from passes import rewrite_attention
from passes.testing import capture, check_rewrite, exact, sus_nodes

B, H, L, D = 2, 2, 6, 4
MIN = torch.finfo(torch.float32).min


def t(*shape, dtype=torch.float32, grad=True, seed=None):
    g = torch.Generator().manual_seed(hash(shape) % 1000 if seed is None else seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float32).to(dtype)
    return x.requires_grad_(grad)


def qkv4(h=H, hk=None, dtype=torch.float32):
    hk = hk or h
    return t(B, h, L, D, dtype=dtype, seed=1), t(B, hk, L, D, dtype=dtype, seed=2), t(B, hk, L, D, dtype=dtype, seed=3)


def qkv3(dtype=torch.float32):
    return t(B * H, L, D, dtype=dtype, seed=1), t(B * H, L, D, dtype=dtype, seed=2), t(B * H, L, D, dtype=dtype, seed=3)


POSITION_BIAS = nn.Parameter(torch.randn(1, H, L, L) * 0.1)


def causal_bool(n=L):
    return torch.ones(n, n, dtype=torch.bool).tril()


def padding_bool():
    m = torch.ones(B, 1, 1, L, dtype=torch.bool)
    m[0, ..., -2:] = False   # last two keys of batch 0 are padding (no row fully masked with causal)
    return m


def additive(shape=(B, 1, 1, L)):
    m = torch.zeros(shape)
    m[0, ..., -2:] = MIN
    return m


def repeat_kv(x, n):
    b, hk, s, d = x.shape
    return x[:, :, None, :, :].expand(b, hk, n, s, d).reshape(b, hk * n, s, d)


def sus_args(gm):
    (node,) = sus_nodes(gm)
    return node.args, node.kwargs


# ----------------------------------------------------------------------------------------------
# F.scaled_dot_product_attention

SDPA_CASES = {
    "plain": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), qkv4, "none", False, 1),
    "bool_mask": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=padding_bool()), qkv4, "bool", False, 1),
    "float_mask": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, additive((L, L))), qkv4, "float", False, 1),
    "causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), qkv4, "none", True, 1),
    "scale": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3), qkv4, "none", False, 1),
    "3d": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=causal_bool()), qkv3, "bool", False, 1),
    "enable_gqa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True),
                   lambda: qkv4(4, 2), "none", True, 2),
    "repeat_kv": (lambda q, k, v: F.scaled_dot_product_attention(q, repeat_kv(k, 2), repeat_kv(v, 2),
                                                                 attn_mask=padding_bool(), scale=0.5),
                  lambda: qkv4(4, 2), "bool", False, 2),
    "repeat_interleave": (lambda q, k, v: F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), torch.repeat_interleave(v, 2, dim=1)), lambda: qkv4(4, 2), "none", False, 2),
}


@pytest.mark.parametrize("name", list(SDPA_CASES))
def test_sdpa(name):
    fn, make, mask_kind, causal, group = SDPA_CASES[name]
    res, gm = check_rewrite(fn, *make(), sites=1, skipped=0)
    site = res.sites[0]
    assert site.mask_kind == mask_kind and site.causal == causal and site.gqa == group
    args, kwargs = sus_args(gm)
    assert kwargs["c"] == float("inf")
    if group > 1:   # the repeated k/v are never materialized
        assert args[1].meta["example_value"].shape[1] == 2
        assert not any(n.target in ("expand", "repeat_interleave") or n.target is torch.repeat_interleave
                       for n in gm.graph.nodes)


def test_sdpa_dropout_train():
    q, k, v = qkv4()
    res, gm = check_rewrite(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.0), q, k, v, sites=1)
    gm, inputs = capture(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.25), q, k, v)
    res = rewrite_attention(gm, exact)
    assert res.sites[0].dropout == 0.25
    args, _ = sus_args(gm)
    assert args[4] == 0.25
    out = gm(*inputs)[0]
    assert out.shape == (B, H, L, D) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# Explicit softmax(q k^T) v: scores, scale, layout

def _attn(s, v):
    return F.softmax(s, dim=-1) @ v


def _iadd_attn(q, k, v):
    s = q @ k.mT * 0.5
    s += additive()
    return _attn(s, v)


EXPLICIT_CASES = {
    # scores products and transposes
    "matmul_transpose_mul": (lambda q, k, v: _attn(torch.matmul(q, k.transpose(-2, -1)) * D ** -0.5, v), qkv4),
    "at_mT_div": (lambda q, k, v: _attn(q @ k.mT / math.sqrt(D), v), qkv4),
    "transpose_2_3": (lambda q, k, v: torch.matmul(torch.softmax(torch.matmul(q, k.transpose(2, 3)) * 0.5, -1), v), qkv4),
    "permute_kT": (lambda q, k, v: _attn((q @ k.permute(0, 1, 3, 2)).div(2.0), v), qkv4),
    "kT_given": (lambda q, k, v: _attn(q @ k.transpose(-2, -1).contiguous() * 0.5, v), qkv4),
    "bmm_3d": (lambda q, k, v: torch.bmm(torch.bmm(q, k.permute(0, 2, 1)).mul(0.5).softmax(dim=-1), v), qkv3),
    "method_matmul": (lambda q, k, v: q.matmul(k.transpose(1, 2)).softmax(-1).matmul(v), qkv3),
    "einsum": (lambda q, k, v: torch.einsum("bhqk,bhkd->bhqd",
                                            torch.einsum("bhqd,bhkd->bhqk", q, k).mul(0.5).softmax(-1), v), qkv4),
    "einsum_blhd": (lambda q, k, v: torch.einsum(
        "bhqk,bkhd->bqhd", torch.einsum("bqhd,bkhd->bhqk", q, k).softmax(-1), v),
        lambda: tuple(x.transpose(1, 2).detach().requires_grad_() for x in qkv4())),
    "einsum_ellipsis": (lambda q, k, v: torch.einsum("...qk,...kd->...qd",
                                                     torch.einsum("...qd,...kd->...qk", q, k).softmax(-1), v), qkv4),
    "baddbmm_alpha": (lambda q, k, v: torch.bmm(torch.baddbmm(torch.empty(B * H, L, L), q, k.transpose(1, 2),
                                                              beta=0.0, alpha=0.5).softmax(-1), v), qkv3),
    "baddbmm_bias": (lambda q, k, v: torch.bmm(torch.baddbmm(additive((L, L)).expand(B * H, L, L), q, k.transpose(1, 2),
                                                             beta=1.0, alpha=0.5).softmax(-1), v), qkv3),
    "no_scale": (lambda q, k, v: _attn(q @ k.transpose(-2, -1), v), qkv4),
    # scale on q / k before the product
    "scale_on_q": (lambda q, k, v: _attn((q * D ** -0.5) @ k.transpose(-2, -1), v), qkv4),
    "scale_on_k_div": (lambda q, k, v: _attn(q @ (k / 2.0).transpose(-2, -1), v), qkv4),
    "scale_on_q_and_k": (lambda q, k, v: _attn((q * D ** -0.25) @ (k * D ** -0.25).transpose(-2, -1), v), qkv4),
    "scale_on_kT": (lambda q, k, v: _attn(q @ (k.transpose(-2, -1) * 0.5), v), qkv4),
    "full_tensor_scale": (lambda q, k, v: _attn((q @ k.transpose(-2, -1)).div(torch.full([], 3.0)), v), qkv4),
    # softmax variants and casts
    "torch_softmax_kw": (lambda q, k, v: torch.softmax(q @ k.mT * 0.5, dim=3) @ v, qkv4),
    "softmax_dtype_to": (lambda q, k, v: F.softmax(q @ k.mT * 0.5, dim=-1, dtype=torch.float32).to(q.dtype) @ v, qkv4),
    "float_softmax_type_as": (lambda q, k, v: (q @ k.mT * 0.5).float().softmax(-1).type_as(v) @ v, qkv4),
    "softmax_type": (lambda q, k, v: (q @ k.mT * 0.5).softmax(-1).type(v.dtype) @ v, qkv4),
    "nn_softmax": (lambda q, k, v: nn.Softmax(dim=-1)(q @ k.mT * 0.5) @ v, qkv4),
    # GQA in the explicit form
    "gqa_repeat_kv": (lambda q, k, v: _attn(q @ repeat_kv(k, 2).transpose(2, 3) * 0.5, repeat_kv(v, 2)),
                      lambda: qkv4(4, 2)),
    "gqa_repeat_interleave": (lambda q, k, v: _attn(q @ k.repeat_interleave(2, 1).mT * 0.5,
                                                    v.repeat_interleave(2, 1)), lambda: qkv4(4, 2)),
    # masks
    "add_mask": (lambda q, k, v: _attn(q @ k.mT * 0.5 + additive(), v), qkv4),
    "mask_plus_scores": (lambda q, k, v: _attn(additive() + q @ k.mT * 0.5, v), qkv4),
    "masked_fill_inf": (lambda q, k, v: _attn((q @ k.mT * 0.5).masked_fill(~causal_bool(), float("-inf")), v), qkv4),
    "masked_fill_min": (lambda q, k, v: _attn((q @ k.mT * 0.5).masked_fill(~padding_bool(), MIN), v), qkv4),
    "masked_fill_-1e9": (lambda q, k, v: _attn((q @ k.mT * 0.5).masked_fill(causal_bool() == 0, -1e9), v), qkv4),
    "where_min": (lambda q, k, v: _attn(torch.where(causal_bool(), q @ k.mT * 0.5, MIN), v), qkv4),
    "where_full_min": (lambda q, k, v: _attn(torch.where(causal_bool(), q @ k.mT * 0.5, torch.full([], MIN)), v), qkv4),
    "where_inverted": (lambda q, k, v: _attn(torch.where(~causal_bool(), float("-inf"), q @ k.mT * 0.5), v), qkv4),
    "padding_and_causal": (lambda q, k, v: _attn((q @ k.mT * 0.5).masked_fill(~causal_bool(), float("-inf"))
                                                 .masked_fill(~padding_bool(), float("-inf")), v), qkv4),
    "where_then_add": (lambda q, k, v: _attn(torch.where(causal_bool(), (q @ k.mT).div(torch.full([], 2.0)),
                                                         torch.full([], MIN)) + additive(), v), qkv4),
    "add_then_fill": (lambda q, k, v: _attn((q @ k.mT * 0.5 + additive((L, L))).masked_fill(~causal_bool(), float("-inf")), v), qkv4),
    "mask_3d": (lambda q, k, v: torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)) + additive((B * H, 1, L)), -1), v), qkv3),
    "learned_bias_no_scale": (lambda q, k, v: _attn(q @ k.mT + POSITION_BIAS, v), qkv4),   # T5-style, needs a mask grad
    "iadd_mask": (lambda q, k, v: _iadd_attn(q, k, v), qkv4),
    "scale_after_inf_fill": (lambda q, k, v: _attn((q @ k.mT).masked_fill(~causal_bool(), float("-inf")) / 2.0, v), qkv4),
    "upcast_mask_fill": (lambda q, k, v: _attn((q @ k.mT).float().masked_fill(~causal_bool(), float("-inf")), v), qkv4),
}


@pytest.mark.parametrize("name", list(EXPLICIT_CASES))
def test_explicit(name):
    fn, make = EXPLICIT_CASES[name]
    res, gm = check_rewrite(fn, *make(), sites=1, skipped=0)
    site = res.sites[0]
    if name.startswith("gqa"):
        assert site.gqa == 2
        assert site.k_shape[1] == 2
    if "mask" in name or "fill" in name or "where" in name or "bias" in name:
        assert site.mask_kind in ("bool", "float")


def test_explicit_scale_value():
    """The scale argument is exactly the product of the factors found."""
    q, k, v = qkv4()
    _, gm = check_rewrite(lambda q, k, v: _attn((q * 0.5) @ (k / 4.0).mT * 3.0, v), q, k, v, sites=1)
    args, _ = sus_args(gm)
    assert args[6] == pytest.approx(0.5 / 4.0 * 3.0)
    _, gm = check_rewrite(lambda q, k, v: _attn(q @ k.mT, v), q, k, v, sites=1)
    assert sus_args(gm)[0][6] == 1.0   # unscaled scores: scale 1.0, not SDPA's default


def test_masked_fill_min_is_additive_and_exact_on_full_rows():
    """masked_fill(finfo.min) becomes an additive float mask with the same value: a fully masked row
    stays uniform as in eager (a bool mask would give 0 or NaN there). Its gradient differs (eager's
    masked_fill passes none to the masked scores; the additive form does on such rows): documented."""
    q, k, v = qkv4()
    full = torch.zeros(B, 1, L, L, dtype=torch.bool)
    full[:, :, 0, :] = True        # row 0 fully masked
    res, gm = check_rewrite(lambda q, k, v: _attn((q @ k.mT * 0.5).masked_fill(full, MIN), v), q, k, v, sites=1,
                            grad=False)
    assert res.sites[0].mask_kind == "float"


def test_fully_masked_rows_with_inf_fill():
    """Documented divergence: with -inf fills a fully masked row is NaN in eager; the op (like SDPA)
    returns 0 there. Every other row is identical."""
    q, k, v = qkv4()
    full = torch.zeros(L, L, dtype=torch.bool)
    full[0, :] = True
    fn = lambda q, k, v: _attn((q @ k.mT * 0.5).masked_fill(full, float("-inf")), v)
    gm, inputs = capture(fn, q, k, v)
    ref = gm(*inputs)[0].detach()
    res = rewrite_attention(gm, exact)
    out = gm(*inputs)[0].detach()
    assert res.sites[0].mask_kind == "bool"
    assert torch.isnan(ref[:, :, 0]).all() and (out[:, :, 0] == 0).all()
    torch.testing.assert_close(out[:, :, 1:], ref[:, :, 1:])


def test_dynamic_shapes_symbolic_scale():
    """dynamic=True: sizes are SymInts, the float scale arrives as a 0-d tensor read with .item()."""
    q, k, v = qkv4()

    def fn(q, k, v, scale, p):
        s = q @ k.transpose(-2, -1) * scale
        return torch.dropout(s.softmax(-1), p, False) @ v

    res, gm = check_rewrite(fn, q, k, v, 0.3, 0.1, sites=1, dynamic=True)
    args, _ = sus_args(gm)
    assert isinstance(args[6], torch.fx.Node)         # the scale stays symbolic
    assert res.sites[0].dropout == 0.0                 # training=False

    def fn2(q, k, v):
        return F.softmax(q @ k.mT / math.sqrt(q.size(-1)), dim=-1) @ v

    check_rewrite(fn2, q, k, v, sites=1, dynamic=True)


def test_symbolic_dropout_p():
    q, k, v = qkv4()

    def fn(q, k, v, p):
        return torch.dropout((q @ k.mT * 0.5).softmax(-1), p, True) @ v

    gm, inputs = capture(fn, q, k, v, 0.2, dynamic=True)
    res = rewrite_attention(gm, exact)
    assert len(res.sites) == 1 and isinstance(res.sites[0].dropout, str)
    assert isinstance(sus_args(gm)[0][4], torch.fx.Node)


# ----------------------------------------------------------------------------------------------
# Dropout

class DropAttn(nn.Module):
    def __init__(self, p, kind):
        super().__init__()
        self.p, self.kind = p, kind
        self.drop = nn.Dropout(p)

    def forward(self, q, k, v):
        w = (q @ k.mT * 0.5).softmax(-1)
        if self.kind == "module":
            w = self.drop(w)
        elif self.kind == "functional":
            w = F.dropout(w, p=self.p, training=self.training)
        else:
            w = torch.dropout(w, self.p, self.training)
        return w @ v


@pytest.mark.parametrize("kind", ["module", "functional", "torch"])
def test_dropout(kind):
    q, k, v = qkv4()
    # eval: dropout_p 0, outputs equal
    res, _ = check_rewrite(DropAttn(0.3, kind).eval(), q, k, v, sites=1)
    assert res.sites[0].dropout == 0.0
    # train with p=0: equal too
    res, _ = check_rewrite(DropAttn(0.0, kind).train(), q, k, v, sites=1)
    assert res.sites[0].dropout == 0.0
    # train with p>0: the op gets the probability
    gm, inputs = capture(DropAttn(0.3, kind).train(), q, k, v)
    res = rewrite_attention(gm, exact)
    assert res.sites[0].dropout == pytest.approx(0.3)
    assert sus_args(gm)[0][4] == pytest.approx(0.3)
    assert gm(*inputs)[0].shape == (B, H, L, D)


# ----------------------------------------------------------------------------------------------
# Dtypes

def test_bf16_softmax_fp32_then_downcast():
    q, k, v = qkv4(dtype=torch.bfloat16)
    fn = lambda q, k, v: F.softmax(q @ k.mT * 0.5, dim=-1, dtype=torch.float32).to(q.dtype) @ v
    res, gm = check_rewrite(fn, q, k, v, sites=1, atol=3e-2, rtol=3e-2)
    assert gm(q, k, v)[0].dtype == torch.bfloat16
    # no cast around the op: it takes bf16 q/k/v and returns bf16
    assert not any(n.op == "call_method" and n.target == "to" for n in gm.graph.nodes)


def test_lone_upcast_keeps_output_dtype():
    """bf16 q/k, scores upcast to fp32, fp32 weights @ v.float(): the graph's output stays fp32."""
    q, k, v = qkv4(dtype=torch.bfloat16)
    fn = lambda q, k, v: (q @ k.mT * 0.5).float().softmax(-1) @ v.float()
    res, gm = check_rewrite(fn, q, k, v, sites=1, atol=3e-2, rtol=3e-2)
    assert gm(q, k, v)[0].dtype == torch.float32
    # the op runs in fp32: q and k are cast up (v already is, by the graph's own .float())
    op = sus_nodes(gm)[0]
    for x in op.args[:2]:
        assert x.op == "call_method" and x.target == "to" and x.args[1] == torch.float32


# ----------------------------------------------------------------------------------------------
# Left alone

TEMPERATURE = nn.Parameter(torch.tensor(0.5))   # a learned 0-d scale: needs its gradient

NEGATIVE_CASES = {
    "weights_returned": (lambda q, k, v: (lambda w: (w @ v, w))((q @ k.mT * 0.5).softmax(-1)), "users"),
    "head_mask": (lambda q, k, v: ((q @ k.mT * 0.5).softmax(-1) * torch.rand(1, H, 1, 1)) @ v, "users|feed"),
    "softmax_dim1": (lambda q, k, v: (q @ k.mT * 0.5).softmax(1) @ v, "dim"),
    "softmax_dim_-2": (lambda q, k, v: F.softmax(q @ k.mT * 0.5, dim=-2) @ v, "dim"),
    "weights_reused": (lambda q, k, v: (lambda w: w @ v + w @ (2 * v))((q @ k.mT).softmax(-1)), "users"),
    "scores_reused": (lambda q, k, v: (lambda s: (s.softmax(-1) @ v, s))(q @ k.mT * 0.5), "other users"),
    "mask_enlarges_scores": (lambda q, k, v: F.softmax(q[:1] @ k[:1].mT + additive((B, 1, L, L)), -1) @ v[:1], "shape"),
    "tensor_scale": (lambda q, k, v: (q @ k.mT * TEMPERATURE).softmax(-1) @ v, "tensor"),
    "scale_after_min_fill": (lambda q, k, v: ((q @ k.mT).masked_fill(~causal_bool(), MIN) * 0.5).softmax(-1) @ v,
                             "scaled after"),
    "fill_zero": (lambda q, k, v: (q @ k.mT).masked_fill(~causal_bool(), 0.0).softmax(-1) @ v, "masking value"),
    "scale_after_mask": (lambda q, k, v: ((q @ k.mT + additive()) * 0.5).softmax(-1) @ v, "scaled after"),
    "log_softmax_like": (lambda q, k, v: (q @ k.mT).softmax(-1).log() @ v, "feed"),
    "softmax_dtype_downcast": (lambda q, k, v: F.softmax(q @ k.mT, -1, dtype=torch.float16).float() @ v, "down"),
    "weights_transposed": (lambda q, k, v: v.mT @ (q @ k.mT).softmax(-1), "feed"),
}


@pytest.mark.parametrize("name", list(NEGATIVE_CASES))
def test_left_alone(name):
    fn, reason = NEGATIVE_CASES[name]
    res, gm = check_rewrite(fn, *qkv4(), sites=0, skipped=1)
    import re
    assert re.search(reason, res.skipped[0].reason), res.skipped[0].reason
    assert not sus_nodes(gm)


def _inplace_attn(q, k, v):
    s = q @ k.mT
    s.mul_(0.5)
    s.masked_fill_(~causal_bool(), float("-inf"))
    s.add_(additive())
    return s.softmax(-1) @ v


def test_inplace_steps():
    """s.mul_/masked_fill_/add_ on the scores before the softmax reads them."""
    res, gm = check_rewrite(_inplace_attn, *qkv4(), sites=1, skipped=0)
    assert res.sites[0].mask_kind == "float"
    assert sus_args(gm)[0][6] == 0.5


def test_inplace_after_softmax_read_is_left_alone():
    def fn(q, k, v):
        s = q @ k.mT
        w = s.softmax(-1)
        s.mul_(2.0)          # mutates the scores after the softmax read them, and s is returned
        return w @ v, s

    res, gm = check_rewrite(fn, *qkv4(), sites=0, skipped=1)
    assert "other users" in res.skipped[0].reason


def test_inplace_scale_on_shared_q_not_peeled():
    def fn(q, k, v):
        q2 = q * 1.0
        q3 = q2.mul_(0.5)            # q2 is mutated: its other reader sees the scaled value
        return _attn(q3 @ k.mT, v), q2 + 1

    check_rewrite(fn, *qkv4(), sites=1, skipped=0)


def test_non_attention_softmax_is_not_a_candidate():
    lin = nn.Linear(8, 5)
    res, _ = check_rewrite(lambda x: lin(x).softmax(-1).sum(), t(3, 8), sites=0, skipped=0)


def test_several_forms_in_one_graph():
    """Rewriting one site must not disturb the next: four forms and one left-alone softmax in a graph."""
    def fn(q, k, v):
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        b = _attn((q @ k.mT * 0.5).masked_fill(~causal_bool(), float("-inf")), a)
        c = torch.einsum("bhqk,bhkd->bhqd", torch.einsum("bhqd,bhkd->bhqk", b, k).softmax(-1), v)
        w = (c @ k.mT).softmax(-1)
        d = w @ v
        e = torch.bmm((q.flatten(0, 1) @ k.flatten(0, 1).mT).softmax(-1), d.flatten(0, 1)).view_as(q)
        return e, w

    res, gm = check_rewrite(fn, *qkv4(), sites=4, skipped=1)
    assert "users" in res.skipped[0].reason
    assert len([n for n in gm.graph.nodes if "softmax" in str(n.target)]) == 1


def test_matcher_bug_becomes_a_skip(monkeypatch):
    """An unexpected exception while matching leaves the site alone (matching never mutates)."""
    import passes.matmul_softmax as ms

    def broken(node):
        raise KeyError("boom")

    monkeypatch.setattr(ms, "parse_scores", broken)
    res, gm = check_rewrite(lambda q, k, v: _attn(q @ k.mT, v), *qkv4(), sites=0, skipped=1)
    assert "internal matcher error" in res.skipped[0].reason and not sus_nodes(gm)
