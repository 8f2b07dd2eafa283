"""Where the host time of one forward+backward goes, compiled and eager, against SDPA's (n = 2k).

    python3 benchmarks/host_profile.py [--n 2048] [--c 32]

At 2k the SUS row is host bound (attention.py: 0.22x eager, 1.06x replayed from a CUDA graph), and
compiled it spends ~0.5 ms more host time per forward+backward than compiled SDPA (overhead.py,
stop 19 call 1). This prints, per variant, the host enqueue time per call and a cProfile of 30 calls
sorted by cumulative time: the functions under which that time is spent.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import sus_fx  # noqa: E402
from attention import make_inputs  # noqa: E402
from overhead import cprofile_text, host_and_wall  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--c", type=float, default=32.0)
    ap.add_argument("--lines", type=int, default=45)
    args = ap.parse_args()
    n, H, D = args.n, 16, 128
    *ins, do = make_inputs(H, n, D, torch.Generator(device="cuda").manual_seed(0))
    sus = lambda q, k, v: sus_fx.sus_attention(q, k, v, is_causal=True, c=args.c)  # noqa: E731
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    variants = {
        "eager sus": sus,
        "eager sdpa": sdpa,
        # SDPA rewritten by the sus backend, as a user's model is (its post-grad pass drops the
        # forward op's autograd layer); call 2 of stop 19 timed torch.compile(sus) under inductor,
        # which keeps that layer
        # (its own function object: Dynamo caches compiled code per code object, so two backends
        # on one function would share a cache)
        "compiled sus": torch.compile(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                      backend=sus_fx.make_backend(c=args.c, min_length=0), fullgraph=True,
                                      dynamic=False),
        "compiled sdpa": torch.compile(sdpa, fullgraph=True, dynamic=False),
    }
    fns = {name: (lambda f=f: torch.autograd.grad(f(*ins), ins, do)) for name, f in variants.items()}
    times = {name: host_and_wall(fb) for name, fb in fns.items()}
    for name in ("compiled sus", "eager sus", "compiled sdpa"):
        print(f"==== {name}: cProfile of 30 forward+backward calls, by cumulative time")
        print(cprofile_text(fns[name], 30, "cumulative", args.lines)[-12000:])
    print(f"n = {n}, H = {H}, D = {D}, c = {args.c:g}, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| what | host enqueue ms/call | synchronized wall ms/call |")
    print("|---|---|---|")
    for name, (h, w) in times.items():
        print(f"| {name} | {h:.3f} | {w:.3f} |")


if __name__ == "__main__":
    main()
