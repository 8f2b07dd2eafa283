"""Where the GPT's extra memory under SUS goes: memory held after the forward (activations saved
for the backward) and the peak during the backward, for SDPA and SUS, eager and compiled.

    python3 benchmarks/memory_gpt.py [--t 8192] [--layers 12]

examples/gpt.py's GPT-124M (width 768, 12 heads, head dim 64), bf16 autocast, batch 1, one
forward+backward after a warm-up step; grads set to None between steps. Eager SUS swaps
F.scaled_dot_product_attention for sus_fx.sus_attention; compiled uses backend="inductor" and
backend="sus". Prints one table (MiB above the model's own parameters).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from gpt import GPT, GPTConfig  # noqa: E402

import sus_fx  # noqa: E402


def measure(model, fn, idx):
    def step():
        for p in model.parameters():
            p.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fn(idx, idx)
        return loss

    step().backward()  # warm-up (compile, autotune, allocator)
    for p in model.parameters():
        p.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss = step()
    torch.cuda.synchronize()
    after_fwd = torch.cuda.memory_allocated() - base
    loss.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return after_fwd / 2 ** 20, peak / 2 ** 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--t", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=12)
    a = ap.parse_args()
    cfg = GPTConfig(vocab_size=50304, n_layer=a.layers, n_head=12, n_embd=768)
    idx = torch.randint(0, 50304, (1, a.t), device="cuda")
    rows = []
    orig = F.scaled_dot_product_attention
    for name in ("eager sdpa", "eager sus", "compiled inductor", "compiled sus"):
        torch.manual_seed(0)
        model = GPT(cfg).cuda()
        torch._dynamo.reset()
        if name == "eager sus":
            F.scaled_dot_product_attention = lambda q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, \
                scale=None, enable_gqa=False: sus_fx.sus_attention(q, k, v, attn_mask, dropout_p, is_causal, scale,
                                                                   enable_gqa, c=32.0)
        # (the backend object: "sus" by name needs the package pip-installed, for its entry point)
        backend = sus_fx.make_backend() if name == "compiled sus" else "inductor"
        fn = torch.compile(model, backend=backend) if name.startswith("compiled") else model
        try:
            rows.append((name, *measure(model, fn, idx)))
        except Exception as e:
            print(f"{name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        finally:
            F.scaled_dot_product_attention = orig
        print(rows[-1] if rows else None, flush=True)
        del model, fn
        torch.cuda.empty_cache()
    print(f"\nT={a.t}, {a.layers} layers, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| run | held after forward MiB | peak in the step MiB |\n|---|---|---|")
    for name, fwd, peak in rows:
        print(f"| {name} | {fwd:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
