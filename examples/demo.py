"""sus-fx demo: one small GPT, trained twice from the same initialization on real text (the
CPython standard library's own sources, bytes as tokens): once with the exact attention backward,
once with SUS. The model (examples/gpt.py) is ordinary PyTorch; only the compile call differs:

    torch.compile(model, backend="sus", options={"c": "exact"})
    torch.compile(model, backend="sus", options={"c": 8})

(plus "min_length": 0, which a model this small needs on a GPU: see README, "Short sequences").

    python examples/demo.py                 # CPU by default, the GPU when there is one
    python examples/demo.py --c 4 --steps 300 --seq 512
"""
import argparse
import copy
import os
import sys
import time

import torch

import sus_fx
from sus_fx.data import byte_tokens, stdlib_text, window_batch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt import GPT, GPTConfig  # noqa: E402


def train(model, data, steps, batch, seq, device, c, lr=2e-3):
    # min_length 0: at a few hundred tokens SUS saves no time, so on a GPU the backend would leave the
    # attention exact by default (min_length "auto"); the demo is about what SUS does to training
    compiled = torch.compile(model, backend="sus", options={"c": c, "min_length": 0})
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    t0 = time.time()
    with sus_fx.stats() as rec:
        for step in range(steps):
            x, y = window_batch(data, batch_size=batch, n=seq, seed=step)
            loss = compiled(x.to(device), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if step % max(1, steps // 5) == 0:
                print(f"  [{c}] step {step:4d}  loss {loss.item():.3f}", flush=True)
    return losses, rec.summary(), time.time() - t0


def main():
    ap = argparse.ArgumentParser(description="exact vs SUS backward on a small GPT")
    ap.add_argument("--c", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    data = byte_tokens(stdlib_text(max_bytes=2_000_000))
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=64)
    base = GPT(cfg).to(args.device)
    x, _ = window_batch(data, batch_size=1, n=args.seq, seed=0)
    print(sus_fx.inspect(base, x.to(args.device), c=args.c, min_length=0).table())
    print(f"\ndevice {args.device}: {args.steps} steps, batch {args.batch} x {args.seq} bytes of CPython source")

    results = {}
    for label, c in (("exact", "exact"), (f"SUS c={args.c:g}", args.c)):
        model = copy.deepcopy(base)
        torch.manual_seed(1)
        results[label] = train(model, data, args.steps, args.batch, args.seq, args.device, c)

    print(f"\n{'backward':>10} | {'first loss':>10} | {'last 10':>8} | {'kept/row':>8} | {'cut':>6} | {'time':>6}")
    for label, (losses, s, dt) in results.items():
        tail = sum(losses[-10:]) / len(losses[-10:])
        print(f"{label:>10} | {losses[0]:10.3f} | {tail:8.3f} | {s['kept_per_row_mean']:8.1f} | "
              f"{100 * s['fraction_cut']:5.1f}% | {dt:5.1f}s")
    print("\nkept/row: attention entries per query row the backward used (exact: all unmasked ones).")


if __name__ == "__main__":
    main()
