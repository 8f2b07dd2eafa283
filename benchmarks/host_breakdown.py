"""The host time of one eager SUS forward+backward, split by function, without a profiler.

    python3 benchmarks/host_breakdown.py [--n 2048] [--c 32]

cProfile inflates functions that make many small calls (host_profile.py at 2k: 1.7 ms per
forward+backward profiled, 1.0 ms not). Here each function of interest is wrapped by a timer
(perf_counter, ~1 us a call) and the loop runs unprofiled; the times are inclusive (a function's
time holds its callees'), per forward+backward. What is left over is time outside our Python code:
the autograd engine, the dispatcher, the aten ops we call.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import sus_fx  # noqa: E402
from attention import make_inputs  # noqa: E402
from sus_fx import ops  # noqa: E402
from sus_fx.kernels import dispatch, sus_bwd, union_hopper  # noqa: E402

TOTAL = collections.Counter()


def timed(owner, name, label=None, static=False):
    fn = getattr(owner, name)
    fn = fn.__func__ if isinstance(fn, staticmethod) else fn
    label = label or f"{getattr(owner, '__name__', owner)}.{name}"

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            TOTAL[label] += time.perf_counter() - t0
    setattr(owner, name, staticmethod(wrapper) if static else wrapper)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--c", type=float, default=32.0)
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    n, H, D = args.n, 16, 128
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # (CPU: the reference path, a smoke test)
    *ins, do = make_inputs(H, n, D, torch.Generator(device=dev).manual_seed(0), dev=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def fb():
        torch.autograd.grad(sus_fx.sus_attention(*ins, is_causal=True, c=args.c), ins, do)

    def loop(iters):
        for _ in range(5):
            fb()
        sync()
        TOTAL.clear()
        t0 = time.perf_counter()
        for _ in range(iters):
            fb()
        t1 = time.perf_counter()
        sync()
        return (t1 - t0) / iters * 1e3

    bare = loop(args.iters)
    timed(ops, "check_inputs")
    timed(ops, "_forward_impl")
    timed(ops, "_draw_seeds")
    timed(ops, "_backward_impl")
    timed(ops._EagerAttention, "forward", "_EagerAttention.forward", static=True)
    timed(ops._EagerAttention, "backward", "_EagerAttention.backward", static=True)
    timed(dispatch, "forward", "dispatch.forward")
    timed(sus_bwd, "sus_backward")
    timed(sus_bwd, "config")
    timed(sus_bwd, "_mask_args")
    timed(sus_bwd, "_sm90_union")
    timed(union_hopper, "union_sm90_impl")
    timed(union_hopper, "supported")
    timed(union_hopper, "k_descriptor")
    timed(union_hopper, "_new_outputs")
    timed(union_hopper, "launch_key")
    timed(union_hopper, "_launch")
    timed(triton.runtime.jit.JITFunction, "run", "JITFunction.run (Triton launches, binder included)")
    timed(torch.autograd, "grad", "torch.autograd.grad (the backward, engine included)")
    wrapped = loop(args.iters)
    print(f"n = {n}, H = {H}, D = {D}, c = {args.c:g}, {torch.cuda.get_device_name() if dev == 'cuda' else 'CPU'}, torch {torch.__version__}, "
          f"triton {triton.__version__}")
    print(f"host ms per eager forward+backward: {bare:.3f} unwrapped, {wrapped:.3f} wrapped")
    print("| function (inclusive) | ms per forward+backward |")
    print("|---|---|")
    for label, t in sorted(TOTAL.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {t / args.iters * 1e3:.3f} |")


if __name__ == "__main__":
    main()
