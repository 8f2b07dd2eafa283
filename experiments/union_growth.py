"""Do the backward's unions grow as a GPT starts to learn? On the H200 (stop 15), GPT-124M at 8k
tokens with c = 32 stepped at ~29 ms for its first ~10 steps and at ~36-37 ms from then on, while
c = 8 and inductor held steady. Phase (b) costs rows x union columns per block, so attention that
sharpens during the first steps would do that. This trains examples/gpt.py's GPT (small, same
recipe as benchmarks/e2e_gpt.py: AdamW 0.9/0.95, wd 0.1, lr 6e-4 with 20 warm-up steps, clip 1.0,
CPython standard-library bytes) on CPU and, at a few steps, computes each layer's expected union
per 128-row block on a fixed held-out window (union_sizes.block_unions), at c = 8 and 32.

    PYTHONPATH=. python3 experiments/union_growth.py [--t 2048] [--steps 40]

Writes experiments/variance/union_growth.json and prints a table (CPU, float32).
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
from attention_entropy import per_attention_site  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402
from union_sizes import CS, union_stats  # noqa: E402

from sus_fx import data as sdata  # noqa: E402


def unions(model, x):
    """{layer: {c: (mean, max, fraction of blocks over 64c) of E|U_b| / c}} for one window."""
    def three(st):
        return st["mean_over_c"], st["max_over_c"], st["blocks_over_64c"]
    return {site: {c: three(st) for c, st in per_c.items()} for site, per_c in union_stats(model.eval(), (x,)).items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--t", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--at", default="0,5,10,15,20,30,40")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--timed-recipe", action="store_true",
                    help="e2e_gpt's timed run: lr warm-up for steps 0-5 (compile + warm-up steps), then the full lr")
    ap.add_argument("--out", default=os.path.join(HERE, "variance", "union_growth.json"))
    a = ap.parse_args()
    torch.manual_seed(0)
    text = torch.frombuffer(bytearray(sdata.stdlib_text(max_bytes=4 << 20).encode("utf-8", "replace")),
                            dtype=torch.uint8).long()
    held = text[-(a.t + 1):][None, :-1]
    train = text[: -(a.t + 1)]
    model = GPT(GPTConfig(vocab_size=256, n_layer=a.layers, n_head=a.heads, n_embd=a.width))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(0)
    at = {int(s) for s in a.at.split(",")}
    rows = []
    t0 = time.time()
    for step in range(a.steps + 1):
        if step in at:
            rows.append({"step": step, "layers": unions(model, held)})
            print(f"step {step} ({time.time() - t0:.0f} s)", flush=True)
        if step == a.steps:
            break
        model.train()
        i = int(torch.randint(0, train.numel() - a.t - 1, (1,), generator=g))
        x, y = train[i:i + a.t][None], train[i + 1:i + a.t + 1][None]
        for gr in opt.param_groups:
            gr["lr"] = 6e-4 if a.timed_recipe and step > 5 else 6e-4 * min(1.0, (step + 1) / 20)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            print(f"  step {step} loss {loss.item():.3f}", flush=True)
    meta = dict(T=a.t, timed_recipe=a.timed_recipe, layers=a.layers, width=a.width, heads=a.heads,
                head_dim=a.width // a.heads, block_rows=128, data="CPython stdlib bytes", torch=torch.__version__)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"\nT={a.t}, {a.layers} layers, width {a.width}, head dim {a.width // a.heads}; E|U| per 128-row block / c, "
          "mean (max) over the layer's blocks and heads; % of blocks over 64c")
    layers = list(rows[0]["layers"])
    print("| step | c | " + " | ".join(layers) + " |")
    print("|---|---|" + "---|" * len(layers))
    for r in rows:
        for c in CS:
            cells = [r["layers"][l][f"c={c:g}"] for l in layers]
            print(f"| {r['step']} | {c:g} | " + " | ".join(f"{m:.1f} ({mx:.1f}) {100 * o:.0f}%" for m, mx, o in cells) + " |")


if __name__ == "__main__":
    main()
