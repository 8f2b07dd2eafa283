"""sus_fx.variance: the estimator against closed forms, and the tool's outputs on tiny models."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sus_fx import variance as V

INF = float("inf")


class LinearInV(nn.Module):
    """out = softmax(q k^T s) v with q, k fixed and v the parameter; loss = <out, G>.
    dv = W^T G, linear in W, so the SUS extra variance has a closed form."""

    def __init__(self, B=2, H=2, L=12, E=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("q", 2.0 * torch.randn(B, H, L, E, generator=g, dtype=torch.float64))
        self.register_buffer("k", 2.0 * torch.randn(B, H, L, E, generator=g, dtype=torch.float64))
        self.v = nn.Parameter(torch.randn(B, H, L, E, generator=g, dtype=torch.float64))

    def weights(self):
        return torch.softmax(self.q @ self.k.transpose(-1, -2) / math.sqrt(self.q.shape[-1]), -1)

    def forward(self, G):
        out = F.scaled_dot_product_attention(self.q, self.k, self.v)
        return (out * G).sum()


def grad_source(shape, scale=1.0):
    def get_batch(i):
        g = torch.Generator().manual_seed(100 + i)
        return scale * torch.randn(shape, generator=g, dtype=torch.float64)
    return get_batch


def test_extra_variance_matches_independent_mask_formula():
    torch.manual_seed(0)
    m = LinearInV()
    gb = grad_source(m.v.shape)
    c = 3.0
    res = V.measure(m, gb, cs=[c, INF], batches=4, fixed_batches=1, draws=600, progress=False)
    W, G = m.weights(), gb(0)
    # Var of sum_i W~_ij G_ie = sum_i Var(W~_ij) G_ie^2, Var(W~_ij) = W (1/c - W) where W < 1/c.
    varw = torch.where(W < 1 / c, W * (1 / c - W), torch.zeros_like(W))
    closed = float(torch.einsum("bhij,bhie->", varw, G ** 2))
    row = res["rows"][0]
    assert row["c"] == c
    assert row["extra_variance_se"] < 0.1 * closed
    assert abs(row["extra_variance"] - closed) < 4 * row["extra_variance_se"] + 1e-3 * closed
    # fraction cut: expected kept = sum min(1, cW)
    exp_cut = 1 - float(torch.clamp(c * W, max=1).sum()) / W.numel()
    assert abs(row["fraction_cut"] - exp_cut) < 0.02
    # c = inf is the exact backward: no extra variance, nothing cut
    ex = res["rows"][1]
    assert ex["extra_variance"] < 1e-20 and ex["fraction_cut"] == 0.0


def test_minibatch_variance_is_the_sample_variance_over_batches():
    m = LinearInV()
    gb = grad_source(m.v.shape)
    res = V.measure(m, gb, cs=[4.0], batches=7, fixed_batches=1, draws=1, progress=False)
    W = m.weights()
    grads = torch.stack([torch.einsum("bhij,bhie->bhje", W, gb(i)).flatten() for i in range(7)])
    want = float(grads.var(0, unbiased=True).sum())
    assert res["minibatch_variance"]["total"] == pytest.approx(want, rel=1e-9)
    assert res["rows"][0]["relative_increase"] == pytest.approx(res["rows"][0]["extra_variance"] / want, rel=1e-12)


class TwoLayer(nn.Module):
    def __init__(self, d=16, h=2, vocab=11):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([Attn(d, h) for _ in range(2)])
        self.head = nn.Linear(d, vocab)

    def forward(self, x, y):
        z = self.emb(x)
        for layer in self.layers:
            z = z + layer(z)
        return F.cross_entropy(self.head(z).flatten(0, 1), y.flatten())


class Attn(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)

    def forward(self, z):
        B, T, D = z.shape
        q, k, v = self.qkv(z).view(B, T, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, T, D))


def tiny_factory(*, n=24, batch_size=2, device="cpu"):
    torch.manual_seed(0)
    model = TwoLayer().to(device)

    def get_batch(i):
        g = torch.Generator().manual_seed(i)
        x = torch.randint(0, 11, (batch_size, n + 1), generator=g)
        return x[:, :-1].to(device), x[:, 1:].to(device)
    return model, get_batch


def test_per_site_rows_groups_json_and_table(tmp_path):
    model, gb = tiny_factory()
    res = V.measure(model, gb, cs=[2.0, 8.0], per_site=True, site_cs=[2.0], batches=4, fixed_batches=2, draws=2,
                    progress=False, n=24, batch_size=2)
    assert res["sites"] == ["layers.0", "layers.1"]
    assert res["groups"] == ["layers.0", "layers.1", "other"]
    kinds = [(r["kind"], r["site"], r["c"]) for r in res["rows"]]
    assert kinds == [("uniform", None, 2.0), ("uniform", None, 8.0), ("site", "layers.0", 2.0),
                     ("site", "layers.1", 2.0)]
    u2, u8, s0, s1 = res["rows"]
    assert u2["relative_increase"] > u8["relative_increase"] > 0
    assert u2["fraction_cut"] > u8["fraction_cut"] >= 0
    # per-group numbers add up to the total
    assert sum(g["extra_variance"] for g in u2["per_group"].values()) == pytest.approx(u2["extra_variance"])
    # a site sampled alone only cuts at that site: its kept/valid counts cover one layer
    assert s0["valid_entries"] == pytest.approx(u2["valid_entries"] / 2)
    assert s1["extra_variance"] > 0 and s0["extra_variance"] > 0
    text = json.dumps(V.jsonable([res]), allow_nan=False)
    back = json.loads(text)
    assert back[0]["rows"][0]["config"] == "all c=2"
    tab = V.format_table(res, groups=True)
    assert "all c=8" in tab and "layers.1 c=2" in tab and "% cut" in tab
    assert "8" in V.table_grid([res])


def test_per_parameter_groups_see_noise_only_upstream_of_the_sampled_site():
    """SUS changes only the gradient that flows back through the sampled attention: parameters
    downstream of it (and the output projection, whose gradient uses the exact forward output)
    get exactly zero extra variance; those upstream get some."""
    model, gb = tiny_factory()
    res = V.measure(model, gb, cs=[], per_site=True, site_cs=[2.0], batches=3, fixed_batches=1, draws=2,
                    progress=False, group_by="param")
    assert res["groups"] == [n for n, _ in model.named_parameters()]
    s0, s1 = res["rows"]
    g0, g1 = s0["per_group"], s1["per_group"]
    for name in ("head.weight", "layers.1.o.weight", "layers.1.qkv.weight", "layers.0.o.weight"):
        assert g0[name]["extra_variance"] == 0.0, name
    assert g0["layers.0.qkv.weight"]["extra_variance"] > 0 and g0["emb.weight"]["extra_variance"] > 0
    for name in ("head.weight", "layers.1.o.weight"):
        assert g1[name]["extra_variance"] == 0.0, name
    for name in ("layers.1.qkv.weight", "layers.0.qkv.weight", "layers.0.o.weight", "emb.weight"):
        assert g1[name]["extra_variance"] > 0, name


def test_cli_outputs(tmp_path, capsys):
    f = tmp_path / "tinymodel.py"
    f.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_variance import tiny_factory\n"
                 % str(__import__("os").path.dirname(__file__)))
    out_json, out_png = tmp_path / "v.json", tmp_path / "v.png"
    argv = ["--model", f"{f}:tiny_factory", "--n", "16", "24", "--batch-size", "2", "--c", "4", "exact",
            "--batches", "3", "--fixed-batches", "1", "--draws", "2", "--engine", "patch", "--json", str(out_json),
            "--no-progress"]
    try:
        import matplotlib  # noqa: F401
        argv += ["--png", str(out_png)]
    except ImportError:
        out_png = None
    assert V.cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "c x n" in printed and "rel. variance increase" in printed
    res = V.load_results(str(out_json))
    assert [r["meta"]["n"] for r in res] == [16, 24]
    assert res[0]["rows"][1]["c"] == INF and res[0]["rows"][1]["extra_variance"] < 1e-20
    assert res[1]["rows"][0]["relative_increase"] > 0
    if out_png is not None:
        assert out_png.stat().st_size > 1000


def test_bad_model_spec_errors(tmp_path):
    with pytest.raises(ValueError):
        V.load_factory("no_colon_here")
    with pytest.raises(FileNotFoundError):
        V.load_factory(str(tmp_path / "missing.py") + ":f")
    with pytest.raises(TypeError):
        V.call_factory(lambda: 3)


@pytest.mark.slow
def test_compile_engine_matches_patch_engine():
    """engine="compile" (torch.compile with the sus backend) draws the same masks as the patch engine
    under the same seeds, so both measure the same extra variance and cut."""
    pytest.importorskip("passes")
    model, gb = tiny_factory()
    kw = dict(cs=[2.0], batches=2, fixed_batches=1, draws=2, progress=False)
    rc = V.measure(model, gb, engine="compile", **kw)
    rp = V.measure(model, gb, engine="patch", **kw)
    assert rc["sites"] == rp["sites"]
    a, b = rc["rows"][0], rp["rows"][0]
    assert a["extra_variance"] > 0
    assert a["extra_variance"] == pytest.approx(b["extra_variance"], rel=1e-4)
    assert a["fraction_cut"] == pytest.approx(b["fraction_cut"])
