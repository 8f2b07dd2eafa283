"""A small nanoGPT-style decoder (byte-level), written the ordinary way.

Attention goes through ``F.scaled_dot_product_attention(q, k, v, is_causal=True)``, so that
``torch.compile(model, backend="sus")`` (or the variance tool's patch engine) rewrites it into the
SUS op. This file never imports sus_fx. Positions use rotary embeddings (RoPE), so the model can
be evaluated at context lengths other than the one it was trained on (beyond it, it extrapolates).

    cfg = GPTConfig(n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg)
    loss = model(idx, targets)        # idx, targets: int64 [B, T]
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class GPTConfig:
    vocab_size: int = 256  # bytes
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    rope_base: float = 10000.0
    rope_len: int = 16384  # positions whose rotary angles are tabled once; longer inputs compute theirs
    dropout: float = 0.0


def rope_tables(T: int, D: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, fp32 [T, D // 2]."""
    inv = 1.0 / (base ** (torch.arange(0, D, 2, device=device, dtype=torch.float32) / D))
    ang = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding on [B, H, T, D] (D even), rotate-half form; cos, sin: [T, D // 2]."""
    D = x.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q, k = _rope(q, *rope), _rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, rope):
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        # The angles as tables, not computed in the forward: Inductor inlines a computed table into
        # every q/k rotation, and at 16k those kernels spent ~0.2 ms each on sin/cos, 20x their
        # memory time (GPT-124M on an H200, benchmarks/results/h200_stop15_1_e2e_gpt.md).
        cos, sin = rope_tables(cfg.rope_len, cfg.n_embd // cfg.n_head, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.wte(idx)
        T = idx.shape[1]
        if T <= self.rope_cos.shape[0]:
            rope = (self.rope_cos[:T], self.rope_sin[:T])
        else:  # beyond the table (extrapolation): the same angles, computed
            rope = rope_tables(T, self.rope_cos.shape[1] * 2, self.cfg.rope_base, idx.device)
        for block in self.blocks:
            x = block(x, rope)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))


def save_checkpoint(model: GPT, path: str, **extra) -> None:
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    torch.save({"config": dataclasses.asdict(model.cfg), "state_dict": sd, **extra}, path)


def load_checkpoint(path: str, map_location="cpu") -> GPT:
    ck = torch.load(path, map_location=map_location, weights_only=False)
    model = GPT(GPTConfig(**ck["config"]))
    model.load_state_dict(ck["state_dict"], strict=False)
    model.lm_head.weight = model.wte.weight
    return model
