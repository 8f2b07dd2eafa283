"""sus_fx.inspect and its Report: tracing only (no Inductor), so these are cheap."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sus_fx
from sus_fx.inspection import Report, SusFallbackWarning, backward_flops
from sus_fx.policy import ENV_VAR, Policy

INF = math.inf


class Attn(nn.Module):
    def __init__(self, dim=16, heads=2, sdpa=False, causal=False):
        super().__init__()
        self.heads, self.sdpa, self.causal = heads, sdpa, causal
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            y = torch.softmax(q @ k.transpose(-2, -1) * (D // self.heads) ** -0.5, dim=-1) @ v
        return y.transpose(1, 2).reshape(B, L, D)


class Model(nn.Module):
    """Layer 0: hand-written attention; graph break; layer 1: causal SDPA; then a softmax over
    dim -2 (attention-like, not attention: must be left alone)."""

    def __init__(self, dim=16):
        super().__init__()
        self.layers = nn.ModuleList([Attn(dim), Attn(dim, sdpa=True, causal=True)])

    def forward(self, x):
        x = x + self.layers[0](x)
        torch._dynamo.graph_break()
        x = x + self.layers[1](x)
        w = torch.softmax(x @ x.transpose(-2, -1), dim=-2)
        return w @ x


POLICY = 'c = 32\n[[rule]]\nmatch = "*layers.0*"\nc = "exact"\n[[rule]]\nmatch = "nowhere*"\nc = 3\n'


@pytest.fixture
def policy(tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    return str(p)


def test_backward_flops_formula():
    # q [B=1, H=2, Lq=4, E=8], k [1, 2, Lk=6, 8], v [1, 2, 6, Ev=4]
    q, k, v = (1, 2, 4, 8), (1, 2, 6, 8), (1, 2, 6, 4)
    pairs = 1 * 2 * 4 * 6
    assert backward_flops(q, k, v, INF) == (2 * pairs * (3 * 8 + 2 * 4),) * 2 == (3072.0, 3072.0)
    # c = 2: dense sampling pass (E) + kept entries (min(c, Lk) per row) x (2E + 2Ev)
    assert backward_flops(q, k, v, 2.0) == (3072.0, 2 * pairs * 8 + 2 * 1 * 2 * 4 * 2 * (16 + 8))
    # causal halves the Lk terms
    assert backward_flops(q, k, v, 2.0, causal=True) == (1536.0, 2 * 24 * 8 + 2 * 8 * 2 * 24)
    # c >= Lk keeps every entry: no saving, never more than exact
    exact, sus = backward_flops(q, k, v, 100.0)
    assert sus == exact
    # 3-D inputs count as one head; GQA counts query heads
    assert backward_flops((3, 5, 8), (3, 7, 8), (3, 7, 8), INF)[0] == 2 * 3 * 5 * 7 * (24 + 16)
    assert backward_flops((1, 8, 4, 8), (1, 2, 6, 8), (1, 2, 6, 8), INF)[0] == 2 * 8 * 4 * 6 * 40
    assert backward_flops(None, k, v, 2.0) == (None, None)
    assert backward_flops(("s0", 2, 4, 8), k, v, 2.0) == (None, None)


def test_report_content(policy):
    torch.manual_seed(0)
    model, x = Model(), torch.randn(2, 8, 16)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()

    report = sus_fx.inspect(model, x, policy=policy, c=2)

    assert isinstance(report, Report) and len(report.graphs) == 2  # the graph break gives two graphs
    s0, s1 = report.sites
    assert "layers.0" in s0.path and s0.graph == 0
    assert s0.c == INF and s0.rule == "rule 1 (*layers.0*)"
    assert "layers.1" in s1.path and s1.graph == 1
    assert s1.c == 2.0 and s1.rule == "option c=2"  # option c replaces the file's default (32)
    assert s1.causal is True and s0.causal is False
    for s in (s0, s1):
        assert s.q_shape == s.k_shape == s.v_shape == (2, 2, 8, 8)
        assert s.gqa == 1 and not s.dropout
        assert isinstance(s.form, str) and s.form and isinstance(s.mask_kind, str)
        assert (s.backward_flops_exact, s.backward_flops_sus) == backward_flops(
            s.q_shape, s.k_shape, s.v_shape, s.c, s.causal)
    assert s0.backward_flops_sus == s0.backward_flops_exact  # exact
    assert s1.backward_flops_sus < s1.backward_flops_exact  # c = 2 of Lk' = 4 keys per row
    # the softmax over dim -2 is reported as left alone, with a reason
    assert any(sk.graph == 1 and "-2" in sk.reason for sk in report.skipped), report.skipped
    # rule 2 matched nothing: a warning; rule 1 matched
    assert any("rule 2 (nowhere*)" in w and "matched no attention site" in w for w in report.warnings)
    assert not any("rule 1" in w for w in report.warnings)

    table = report.table()
    for text in ("path", "form", "bwd FLOPs exact", "bwd FLOPs sus", "layers.0", "layers.1", "exact", "rule 1"):
        assert text in table
    printed = str(report)
    assert "2 attention sites rewritten" in printed and "in 2 graphs" in printed
    assert "left alone" in printed and "warning: policy rule 2 (nowhere*)" in printed
    assert table in printed

    assert "softmax" in report.graph_before and "scaled_dot_product_attention" in report.graph_before
    assert "sus.attention" not in report.graph_before
    assert report.graph_after.count("torch.ops.sus.attention") == 2
    assert "graph 0" in report.graph_before and "graph 1" in report.graph_after
    assert report.graphs[0].code_after.count("torch.ops.sus.attention") == 1

    # no training happened: weights untouched, no gradients, random state restored
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]) and p.grad is None
    assert torch.equal(torch.get_rng_state(), rng)


def test_repeated_inspect_traces_afresh():
    model, x = Model(), torch.randn(2, 8, 16)
    for c in (2.0, 4.0, "exact", 16.0):
        report = sus_fx.inspect(model, x, policy=False, c=c)
        expected = INF if c == "exact" else c
        assert [s.c for s in report.sites] == [expected, expected]
        assert all(s.rule == f"option c={'exact' if c == 'exact' else f'{c:g}'}" for s in report.sites)


def test_env_policy_function_and_kwargs(tmp_path, monkeypatch):
    p = tmp_path / "env.toml"
    p.write_text("c = 5\n")
    monkeypatch.setenv(ENV_VAR, str(p))

    def attention(q, k, v, *, scale):
        return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v

    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    report = sus_fx.inspect(attention, q, k, v, scale=0.5)
    (site,) = report.sites
    assert site.c == 5.0 and site.rule == "default (env.toml)" and site.path == ""
    assert Policy.resolve(False).choose("")[0] == 32.0
    assert [s.c for s in sus_fx.inspect(attention, q, k, v, scale=0.5, policy=False).sites] == [32.0]


def test_pass_failure_is_reported(monkeypatch):
    import passes

    def broken(gm, choose_c, **_):
        raise RuntimeError("boom")

    monkeypatch.setattr(passes, "rewrite_attention", broken)
    model, x = Model(), torch.randn(2, 8, 16)
    with pytest.warns(SusFallbackWarning, match="boom"):
        report = sus_fx.inspect(model, x)
    assert report.sites == [] and len(report.errors) == 2
    assert "boom" in str(report)
    assert report.graph_after == report.graph_before


def test_dynamic_shapes_flops_use_the_compiling_sizes(monkeypatch):
    """Under dynamic=True the passes report symbolic sizes; the FLOP estimate evaluates them at
    the sizes of the example that triggered the compile."""
    from sus_fx import backend

    monkeypatch.setattr(backend, "_compile_fx", lambda gm, example_inputs, patches: gm.forward)
    got = []
    be = sus_fx.make_backend(c=2, report=got.append)
    torch._dynamo.reset()
    torch.compile(Attn(), backend=be, dynamic=True)(torch.randn(2, 8, 16))
    (site,) = got[0].sites
    assert any(isinstance(d, str) for d in site.q_shape), site.q_shape  # symbolic, as reported
    assert (site.backward_flops_exact, site.backward_flops_sus) == backward_flops((2, 2, 8, 8), (2, 2, 8, 8),
                                                                                  (2, 2, 8, 8), 2.0)
