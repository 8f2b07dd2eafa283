"""Why the SUS backward costs more inside the GPT than in benchmarks/attention.py (H200 e2e run:
_union_kernel 2.25 ms and _sparse_bwd_kernel 1.13 ms per layer at T=16k, H=12, D=64, c=32,
against ~0.4 + 0.7 ms expected from the standalone runs).

Separates the suspects, one kernel-time measurement each (torch.profiler, device time of the two
kernels per call):
  inputs:  random q,k,v (benchmark) vs the GPT's own q,k,v,dO after a few training steps;
  path:    direct launch (eager) vs the traced triton_op inside a compiled graph;
  kernel:  the current union kernel vs the previous (helper-call) version, if present;
and prints the union size per block (mean, max, overflowing blocks) for each input.

    python3 benchmarks/diagnose_e2e_bwd.py [--T 16384] [--train-steps 30]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

from sus_fx.kernels import sus_bwd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_kernels import kernels  # noqa: E402


def kernel_ms(fn, names=("_union_kernel", "_union_expand_kernel", "_sparse_bwd_kernel"), reps=5):
    """{name: device ms per call of the kernels whose name contains it, "other": the rest}."""
    out = {n: 0.0 for n in names}
    out["other"] = 0.0
    for ms, _, key in kernels(fn, reps):
        hit = [n for n in names if n in key]
        out[hit[0] if hit else "other"] += ms
    return out


def union_stats(mod, q, k, v, out, lse, do, c):
    mod._OVERRIDE["debug"] = "stats"
    try:
        mod.sus_backward(do, q, k, v, None, out, lse, True, q.shape[-1] ** -0.5, c, 1234)
        cnt, cap = mod._DEBUG["cnt"].float(), mod._DEBUG["U_cap"]
        return f"union/block mean {cnt.mean():.0f} max {cnt.max():.0f} cap {cap} overflow {(cnt > cap).float().mean() * 100:.1f}%"
    finally:
        mod._OVERRIDE.pop("debug", None)


def capture_gpt_inputs(T, steps, layer_ids):
    """q,k,v,out,lse,dO of some layers of the 124M GPT after `steps` eager AdamW steps on text."""
    from gpt import GPT, GPTConfig
    from sus_fx import data as sdata
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50304, n_layer=12, n_head=12, n_embd=768)
    model = GPT(cfg).cuda()
    try:
        text = sdata.stdlib_text()
    except Exception:  # noqa: BLE001
        text = open(os.path.join(ROOT, "README.md"), "rb").read() * 200
    ids = torch.frombuffer(bytearray(text if isinstance(text, bytes) else text.encode()), dtype=torch.uint8).long()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), fused=True)
    for s in range(steps):
        i = (s * 7919 * T) % (len(ids) - T - 2)
        x, y = ids[i:i + T][None].cuda(), ids[i + 1:i + T + 1][None].cuda()
        with torch.autocast("cuda", torch.bfloat16):
            loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    grabbed = {}
    orig = F.scaled_dot_product_attention
    layer = [0]

    def hook(q, k, v, *a, **kw):
        o = orig(q, k, v, *a, **kw)
        if layer[0] in layer_ids:
            q_, k_, v_ = (t.detach().contiguous() for t in (q, k, v))
            o2, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q_, k_, v_, None, True, 0.0, True)[:2]
            grabbed[layer[0]] = [q_, k_, v_, o2, lse.reshape(q.shape[:3]).float()]
            o.register_hook(lambda g, L=layer[0]: grabbed[L].append(g.detach().contiguous()))
        layer[0] += 1
        return o

    F.scaled_dot_product_attention = hook
    try:
        x = ids[:T][None].cuda()
        with torch.autocast("cuda", torch.bfloat16):
            loss = model(x, ids[1:T + 1][None].cuda())
        loss.backward()
    finally:
        F.scaled_dot_product_attention = orig
    print(f"gpt: {steps} steps, loss {loss.item():.3f}")
    return grabbed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=16384)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--c", type=float, default=32.0)
    a = ap.parse_args()
    T, c, H, D = a.T, a.c, 12, 64
    print(torch.__version__, torch.cuda.get_device_name(), f"T={T} H={H} D={D} c={c}")
    rows = []

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(1, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, True)[:2]
    lse = lse.reshape(1, H, T).float()
    sets = {"random": (q, k, v, out, lse, do)}
    t0 = time.time()
    for L, tensors in capture_gpt_inputs(T, a.train_steps, (0, 5, 11)).items():
        sets[f"gpt layer {L}"] = tuple(tensors)
    print(f"capture {time.time() - t0:.0f}s")

    old = None
    old_path = os.path.join(ROOT, "benchmarks", "_old_sus_bwd.py")
    if os.path.exists(old_path):
        spec = importlib.util.spec_from_file_location("_old_sus_bwd", old_path)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)

    from sus_fx.kernels import triton_op  # noqa: F401
    seeds = torch.tensor([1, 2], dtype=torch.int64, device="cuda")
    for name, (q, k, v, out, lse, do) in sets.items():
        sc = q.shape[-1] ** -0.5
        rows.append((name, "direct (new kernel)", kernel_ms(
            lambda: sus_bwd.sus_backward(do, q, k, v, None, out, lse, True, sc, c, 1234)), union_stats(sus_bwd, q, k, v, out, lse, do, c)))
        if old is not None:
            rows.append((name, "direct (old kernel)", kernel_ms(
                lambda: old.sus_backward(do, q, k, v, None, out, lse, True, sc, c, 1234)), ""))
        rows.append((name, "triton_op eager", kernel_ms(
            lambda: torch.ops.sus.attention_backward_triton(do, q, k, v, None, out, lse, seeds, True, sc, c, 0)), ""))
        cf = torch.compile(lambda do, q, k, v, out, lse: torch.ops.sus.attention_backward_triton(
            do, q, k, v, None, out, lse, seeds, True, sc, c, 0), fullgraph=True)
        try:
            rows.append((name, "triton_op compiled", kernel_ms(lambda: cf(do, q, k, v, out, lse)), ""))
        except Exception as e:  # noqa: BLE001
            rows.append((name, "triton_op compiled", {}, f"FAILED {type(e).__name__}: {str(e)[:200]}"))
        from torch.nn.attention import SDPBackend, sdpa_kernel
        qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))

        def dense():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(qr, kr, vr, is_causal=True).backward(do)
        rows.append((name, "cuDNN fwd+bwd", kernel_ms(dense, names=("bprop", "fprop")), "union col = bwd, sparse col = fwd"))

    print("\n| inputs | path | union ms | sparse ms | other ms | note |\n|---|---|---|---|---|---|")
    for name, path, ms, note in rows:
        print(f"| {name} | {path} | {ms.get('_union_kernel', ms.get('bprop', 0)):.3f} | "
              f"{ms.get('_sparse_bwd_kernel', ms.get('fprop', 0)):.3f} | {ms.get('other', 0):.3f} | {note} |")


if __name__ == "__main__":
    main()
