"""Host-side cost of the SUS op at small n (where launches, not kernels, set the time).

    python3 benchmarks/overhead.py
Prints, per call: host enqueue time (no sync) and synchronized wall time of the pieces, then a
torch.profiler table of one forward+backward through the public op.
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import sus_fx  # noqa: E402
from sus_fx.kernels import dispatch, sus_bwd  # noqa: E402


def host_and_wall(fn, n=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e3, (t2 - t0) / n * 1e3


def cprofile_text(fn, n, sort, limit):
    """cProfile of n calls of fn (the GPU drained after), as pstats prints it sorted by `sort`."""
    import cProfile
    import io
    import pstats
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    torch.cuda.synchronize()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats(sort).print_stats(limit)
    return buf.getvalue()


def main():
    n, H, D = 2048, 16, 128
    q, k, v, do = (torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    s = 1 / math.sqrt(D)
    o, lse = dispatch.forward(q, k, v, None, True, s, 0.0)
    res = {}
    res["dispatch.forward"] = host_and_wall(lambda: dispatch.forward(q, k, v, None, True, s, 0.0))
    res["sus_backward (2 kernels + torch ops)"] = host_and_wall(
        lambda: sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, s, 32.0, 1))
    sus_bwd._OVERRIDE["SM90"] = 0
    res["sus_backward, Triton union (SM90=0)"] = host_and_wall(
        lambda: sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, s, 32.0, 1))
    del sus_bwd._OVERRIDE["SM90"]
    sus_bwd._OVERRIDE["debug"] = "union_only"
    res["phase (a) + setup only"] = host_and_wall(
        lambda: sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, s, 32.0, 1))
    del sus_bwd._OVERRIDE["debug"]
    res["empty torch op x10"] = host_and_wall(lambda: [torch.empty(1, device="cuda") for _ in range(10)])
    seeds = torch.tensor([0, 12345], dtype=torch.int64, device="cuda")
    res["op backward (sus::attention_backward)"] = host_and_wall(
        lambda: torch.ops.sus.attention_backward(do, q, k, v, None, o, lse, seeds, 0.0, True, s, 32.0, False))
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))

    def fb():
        sus_fx.sus_attention(qq, kk, vv, is_causal=True, c=32.0).backward(do)

    res["public op fwd+bwd (eager path: _EagerAttention)"] = host_and_wall(fb)
    from sus_fx import ops, kernels  # noqa: F401
    from sus_fx.kernels import triton_op  # noqa: F401
    res["triton_op backward, eager call"] = host_and_wall(
        lambda: torch.ops.sus.attention_backward_triton(do, q, k, v, None, o, lse, seeds, True, s, 32.0, 0))
    plain = ops._plain_eager
    ops._plain_eager = lambda *t: False  # the registered custom ops, as in the previous version
    try:
        res["public op fwd+bwd through the custom ops"] = host_and_wall(fb)
    finally:
        ops._plain_eager = plain
    cf = torch.compile(lambda q, k, v: sus_fx.sus_attention(q, k, v, is_causal=True, c=32.0), fullgraph=True)
    res["torch.compile'd fwd+bwd (traced kernels)"] = host_and_wall(lambda: cf(qq, kk, vv).backward(do))
    cs = torch.compile(lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
                       fullgraph=True)
    res["torch.compile'd SDPA fwd+bwd"] = host_and_wall(lambda: cs(qq, kk, vv).backward(do))

    def cud():
        torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, is_causal=True).backward(do)

    res["SDPA fwd+bwd"] = host_and_wall(cud)
    print("| what | host enqueue ms/call | synchronized wall ms/call |")
    print("|---|---|---|")
    for kname, (h, w) in res.items():
        print(f"| {kname} | {h:.3f} | {w:.3f} |")
    # where the host time of one eager forward+backward goes, by Python function
    print("cProfile, 20 eager forward+backward calls, by own time:")
    print(cprofile_text(fb, 20, "tottime", 25)[-6000:])
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fb()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=22, max_name_column_width=60))


if __name__ == "__main__":
    main()
