"""Every GPU kernel of one forward+backward, SUS against cuDNN SDPA: where the device time goes.

    python3 benchmarks/profile_kernels.py [--n 2048,16384] [--d 128] [--h 16] [--c 32]

Causal, bf16, B=1. For each n, the kernels of `reps` f+b calls (torch.profiler, device time per
call, sorted), and the total. The host side is not measured here (benchmarks/overhead.py does that).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import sus_fx


def kernels(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0.0)
        if t > 0 and e.device_type == torch.autograd.DeviceType.CUDA:
            rows.append((t / 1000.0 / reps, e.count / reps, e.key))
    return sorted(rows, reverse=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="2048,16384")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--h", type=int, default=16)
    ap.add_argument("--c", type=float, default=32.0)
    a = ap.parse_args()
    print(torch.__version__, torch.cuda.get_device_name())
    for n in map(int, a.n.split(",")):
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(1, a.h, n, a.d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
        q, k, v = (t.requires_grad_() for t in (q, k, v))

        def sus():
            sus_fx.sus_attention(q, k, v, is_causal=True, c=a.c).backward(do)

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(do)

        for name, fn in (("cudnn", cudnn), (f"sus c={a.c:g}", sus)):
            rows = kernels(fn)
            print(f"\n## n={n} D={a.d} H={a.h} {name}: {sum(r[0] for r in rows) * 1000:.1f} us of kernels per f+b")
            print("| us | calls | kernel |\n|---|---|---|")
            for ms, cnt, key in rows[:14]:
                print(f"| {ms * 1000:.1f} | {cnt:g} | `{key[:90]}` |")


if __name__ == "__main__":
    main()
