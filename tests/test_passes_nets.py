"""Whole attention modules: nanoGPT (flash and manual), minGPT, nn.MultiheadAttention,
nn.TransformerEncoderLayer. Train mode; every attention layer rewritten; outputs and c=inf
gradients equal to the original graph's."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from passes import rewrite_attention
from passes.testing import capture, check_rewrite, exact, sus_nodes

torch.manual_seed(0)


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention (model.py), both paths."""

    def __init__(self, n_embd=32, n_head=4, block_size=16, dropout=0.0, flash=True):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.n_embd, self.dropout, self.flash = n_head, n_embd, dropout, flash
        if not flash:
            self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                               dropout_p=self.dropout if self.training else 0, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.ln_1 = nn.LayerNorm(32)
        self.attn = CausalSelfAttention(**kw)

    def forward(self, x):
        return x + self.attn(self.ln_1(x))


class MinGPTAttention(nn.Module):
    """minGPT's CausalSelfAttention (mingpt/model.py)."""

    def __init__(self, n_embd=32, n_head=4, block_size=16, attn_pdrop=0.0):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(attn_pdrop)
        self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


def x_input(T=12):
    return torch.randn(2, T, 32, requires_grad=True)


@pytest.mark.parametrize("flash", [True, False])
def test_nanogpt(flash):
    model = nn.Sequential(Block(flash=flash), Block(flash=flash)).train()
    res, gm = check_rewrite(model, x_input(), sites=2, skipped=0)
    assert [s.path for s in res.sites] == ["0.attn", "1.attn"]
    if flash:
        assert all(s.causal for s in res.sites)
    else:
        assert all(s.mask_kind == "bool" for s in res.sites)


def test_nanogpt_dropout_recorded():
    model = Block(flash=False, dropout=0.1).train()
    gm, inputs = capture(model, x_input())
    res = rewrite_attention(gm, exact)
    assert res.sites[0].dropout == pytest.approx(0.1)
    model = Block(flash=True, dropout=0.1).train()
    gm, inputs = capture(model, x_input())
    res = rewrite_attention(gm, exact)
    assert res.sites[0].dropout == pytest.approx(0.1)


def test_mingpt():
    res, gm = check_rewrite(MinGPTAttention().train(), x_input(), sites=1, skipped=0)


def test_choose_c_gets_module_path():
    seen = []

    def choose(path):
        seen.append(path)
        return (8.0, "rule-1") if path.startswith("0.") else (float("inf"), None)

    model = nn.Sequential(Block(flash=False), Block(flash=True)).train()
    res, gm = check_rewrite(model, x_input(), sites=2, choose_c=choose, grad=False)
    assert seen == ["0.attn", "1.attn"]
    assert [(s.c, s.rule) for s in res.sites] == [(8.0, "rule-1"), (float("inf"), None)]
    assert [n.kwargs["c"] for n in sus_nodes(gm)] == [8.0, float("inf")]


def test_choose_c_exception_propagates():
    def boom(path):
        raise RuntimeError("policy error")

    gm, _ = capture(Block(flash=True), x_input())
    with pytest.raises(RuntimeError, match="policy error"):
        rewrite_attention(gm, boom)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention(need_weights):
    mha = nn.MultiheadAttention(32, 4, dropout=0.0, batch_first=True).train()
    mask = torch.zeros(12, 12).masked_fill(torch.ones(12, 12, dtype=torch.bool).triu(1), float("-inf"))

    def fn(x):
        return mha(x, x, x, attn_mask=mask, need_weights=need_weights)[0]

    res, gm = check_rewrite(fn, x_input(), sites=1, skipped=0)
    assert res.sites[0].q_shape == (2, 4, 12, 8)


def test_multihead_attention_weights_used_is_left_alone():
    mha = nn.MultiheadAttention(32, 4, batch_first=True).train()

    def fn(x):
        out, w = mha(x, x, x)
        return out, w

    res, gm = check_rewrite(fn, x_input(), sites=0, skipped=1)
    assert "weights" in res.skipped[0].reason


def test_multihead_attention_dropout_and_padding():
    mha = nn.MultiheadAttention(32, 4, dropout=0.2, batch_first=True).train()
    pad = torch.zeros(2, 12, dtype=torch.bool)
    pad[0, -3:] = True
    gm, inputs = capture(lambda x: mha(x, x, x, key_padding_mask=pad, need_weights=False)[0], x_input())
    res = rewrite_attention(gm, exact)
    assert len(res.sites) == 1 and res.sites[0].dropout == pytest.approx(0.2)
    assert gm(*inputs)[0].shape == (2, 12, 32)
    mha.dropout = 0.0
    check_rewrite(lambda x: mha(x, x, x, key_padding_mask=pad, need_weights=False)[0], x_input(), sites=1)


def test_transformer_encoder_layer():
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).train()
    causal = nn.Transformer.generate_square_subsequent_mask(12)
    res, gm = check_rewrite(lambda x: enc(x, mask=causal, is_causal=True), x_input(), sites=2, skipped=0)
    assert [s.path for s in res.sites] == ["layers.0.self_attn", "layers.1.self_attn"]
