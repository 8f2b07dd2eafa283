"""min_length: attention with keys shorter than it is left as it was (SUS saves no time there).

Default "auto": sus_fx.policy.AUTO_MIN_LENGTH by device (CUDA 8192, CPU 0). These tests run on the
CPU; where they need "auto" to bite they patch the CPU's entry."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sus_fx
from sus_fx import policy as policy_mod
from sus_fx.backend import make_backend
from sus_fx.policy import Policy, parse_min_length

pytestmark = pytest.mark.auto_min_length


class Attn(nn.Module):
    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, L, D)


def test_policy_file_option_and_auto(tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text("min_length = 2048\n")
    pol = Policy.load(p)
    assert pol.min_length_for("cuda") == 2048 and pol.min_length_for("cpu") == 2048
    assert Policy.resolve(str(p), min_length=0).min_length_for("cuda") == 0  # the option wins
    auto = Policy.resolve(str(p), min_length="auto")  # an explicit "auto" replaces the file's value
    assert auto.min_length_for("cuda") == policy_mod.AUTO_MIN_LENGTH["cuda"] == 8192
    assert auto.min_length_for("cpu") == 0
    assert Policy().min_length_for("cuda") == 8192 and "min_length = auto" in Policy().describe()
    assert "min_length = 2048" in pol.describe()


@pytest.mark.parametrize("value", [-1, 1.5, "long", True])
def test_bad_min_length_is_an_error_that_names_the_key(tmp_path, value):
    p = tmp_path / "policy.toml"
    p.write_text(f"min_length = {value!r}\n".replace("'", '"').replace("True", "true"))
    with pytest.raises(ValueError, match=r"policy.toml: top-level key 'min_length'"):
        Policy.load(p)
    with pytest.raises(ValueError, match="min_length"):
        make_backend(min_length=value)
    with pytest.raises(ValueError, match="min_length"):
        parse_min_length(value, "x")


def test_min_length_written_inside_a_rule_says_where_it_belongs(tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text('c = 8\n[[rule]]\nmatch = "*"\nc = 4\nmin_length = 0\n')
    with pytest.raises(ValueError, match=r"rule 1 \(match '\*'\): key 'min_length' is a top-level key; put it before"):
        Policy.load(p)


def test_short_keys_are_left_alone_with_the_reason():
    model, x = Attn(), torch.randn(2, 8, 16)
    short = sus_fx.inspect(model, x, min_length=16)
    assert short.sites == [] and len(short.skipped) == 1
    assert "key length 8 < min_length 16 (cpu)" in short.skipped[0].reason
    assert "min_length=0 rewrites it" in str(short)
    assert len(sus_fx.inspect(model, x, min_length=8).sites) == 1  # 8 is not below 8


def test_auto_uses_the_device_entry(monkeypatch):
    model, x = Attn(), torch.randn(2, 8, 16)
    assert len(sus_fx.inspect(model, x).sites) == 1  # CPU: 0
    monkeypatch.setitem(policy_mod.AUTO_MIN_LENGTH, "cpu", 9)
    assert sus_fx.inspect(model, x).sites == []
    assert len(sus_fx.inspect(model, x, min_length=0).sites) == 1


def test_backend_option_leaves_the_graph_exact():
    """Under the backend a short site is not rewritten: the compiled model's gradients are SDPA's,
    exactly (c=0.01 would make any sampled gradient visibly different)."""
    torch.manual_seed(0)
    model, x = Attn(), torch.randn(2, 8, 16)
    be = make_backend(c=0.01, min_length=16)
    out = torch.compile(model, backend=be)(x)
    out.sum().backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for g, ref in zip(got, (p.grad for p in model.parameters())):
        torch.testing.assert_close(g, ref)
    assert be.reports[0].sites == [] and "min_length 16" in be.reports[0].skipped[0].reason
    torch._dynamo.reset()
    be2 = make_backend(options={"min_length": 0})
    torch.compile(model, backend=be2)(x)
    assert len(be2.reports[0].sites) == 1


def test_symbolic_key_length_is_rewritten():
    """Dynamic shapes: the key length is not known when the graph compiles, so it is not compared."""
    model, x = Attn(), torch.randn(2, 8, 16)
    torch._dynamo.mark_dynamic(x, 1)
    be = make_backend(min_length=10 ** 6)
    torch.compile(model, backend=be)(x)
    (site,) = be.reports[0].sites
    assert not isinstance(site.k_shape[-2], int)


def test_cli_min_length(capsys, tmp_path):
    from sus_fx.cli import main
    f = tmp_path / "m.py"
    f.write_text("import torch\nfrom tests.test_min_length import Attn\n"
                 "def make():\n    return Attn(), (torch.randn(2, 8, 16),)\n")
    assert main(["inspect", f"{f}:make", "--min-length", "16"]) == 0
    assert "key length 8 < min_length 16" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["inspect", f"{f}:make", "--min-length", "long"])
    assert 'an integer >= 0 (a key length) or "auto"' in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_default_leaves_short_attention_to_sdpa():
    model, x = Attn().cuda(), torch.randn(2, 8, 16, device="cuda")
    be = make_backend()
    torch.compile(model, backend=be)(x)
    assert be.reports[0].sites == []
    assert "key length 8 < min_length 8192 (cuda)" in be.reports[0].skipped[0].reason


class Explicit(nn.Module):
    def forward(self, q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) * 0.25, dim=-1) @ v


class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("family", ["sdpa", "matmul_softmax", "mha"])
def test_every_family_is_compared_on_its_key_length(family):
    """Lq = 4 and Lk = 8: the key length is what counts (the keys are what SUS samples)."""
    if family == "sdpa":
        model, args = Attn(), (torch.randn(2, 8, 16),)
    elif family == "matmul_softmax":
        model, args = Explicit(), (torch.randn(1, 2, 4, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8))
    else:
        model, args = MHA(), (torch.randn(2, 8, 16),)
    assert len(sus_fx.inspect(model, *args, min_length=8).sites) == 1
    short = sus_fx.inspect(model, *args, min_length=9)
    assert short.sites == [] and "key length 8 < min_length 9" in short.skipped[0].reason
