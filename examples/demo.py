"""Train a tiny attention model twice from one initialization: exact backward vs SUS backward.

    python examples/demo.py            # CPU by default, CUDA when present
    python examples/demo.py --c 4 --steps 200

The model calls sus_fx.sus_attention directly.
"""
import argparse
import copy
import time

import torch
import torch.nn.functional as F

import sus_fx


class TinyAttention(torch.nn.Module):
    """One causal self-attention block on a copy task: predict the token `lag` steps back."""

    def __init__(self, vocab=32, dim=64, heads=4, c=float("inf")):
        super().__init__()
        self.heads, self.c = heads, c
        self.emb = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Parameter(torch.randn(512, dim) * 0.02)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, vocab)

    def forward(self, idx):
        B, L = idx.shape
        x = self.emb(idx) + self.pos[:L]
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = sus_fx.sus_attention(q, k, v, is_causal=True, c=self.c)
        return self.out(x + y.transpose(1, 2).reshape(B, L, -1))


def batch(B, L, vocab, lag, device, gen):
    idx = torch.randint(0, vocab, (B, L), generator=gen).to(device)
    target = torch.roll(idx, lag, dims=1)
    target[:, :lag] = -100  # nothing to copy yet
    return idx, target


def train(model, steps, seq, device, lag=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        idx, target = batch(16, seq, model.emb.num_embeddings, lag, device, gen)
        loss = F.cross_entropy(model(idx).flatten(0, 1), target.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--c", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    torch.manual_seed(0)
    exact = TinyAttention().to(args.device)
    sus = copy.deepcopy(exact)
    sus.c = args.c
    print(f"device {args.device}, seq {args.seq}, {args.steps} steps, copy task (loss -> 0 once learned)")
    results = {}
    for name, model in (("exact", exact), (f"SUS c={args.c:g}", sus)):
        t0 = time.time()
        with sus_fx.stats() as rec:
            losses = train(model, args.steps, args.seq, args.device)
        results[name] = (losses, rec.summary(), time.time() - t0)
    print(f"{'backward':>12} | {'first loss':>10} | {'last loss':>9} | {'kept/row':>8} | {'cut':>6} | {'time':>6}")
    for name, (losses, s, dt) in results.items():
        last = sum(losses[-10:]) / 10
        print(f"{name:>12} | {losses[0]:10.3f} | {last:9.3f} | {s['kept_per_row_mean']:8.1f} | "
              f"{100 * s['fraction_cut']:5.1f}% | {dt:5.1f}s")


if __name__ == "__main__":
    main()
