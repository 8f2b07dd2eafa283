"""A small model to try `sus-fx inspect` on.

    sus-fx inspect examples/inspect_model.py:make_model
    sus-fx inspect examples/inspect_model.py:make_model --policy examples/policy.toml --graphs

or from Python:

    model, args = make_model()
    print(sus_fx.inspect(model, *args, policy="examples/policy.toml"))

A factory takes no arguments and returns (model, example_args) or (model, example_args,
example_kwargs). Layer 0 writes attention by hand (causal mask from a buffer, as GPT-2 does),
layer 1 calls F.scaled_dot_product_attention.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class ManualAttention(nn.Module):
    def __init__(self, dim, heads, max_len=128):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("bias", torch.tril(torch.ones(max_len, max_len, dtype=torch.bool)))

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)
        scores = scores.masked_fill(~self.bias[:L, :L], float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class SdpaAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    def __init__(self, dim, heads, attn):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = attn
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab=64, dim=32, heads=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList([Block(dim, heads, ManualAttention(dim, heads)),
                                     Block(dim, heads, SdpaAttention(dim, heads))])
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx):
        x = self.emb(idx)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def make_model():
    torch.manual_seed(0)
    return TinyLM(), (torch.randint(0, 64, (2, 64)),)
