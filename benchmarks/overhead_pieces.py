"""Where the host time of one SUS backward goes at small n, launch by launch (GPU time beside it).

    python3 benchmarks/overhead_pieces.py [--n 2048]

Stop 12 measured sus_backward's host cost at 2k: 0.27 ms with the Triton union kernel, 0.72 ms with
the Gluon one. This times each piece alone (no sync inside the loop), the GPU time of the whole
backward by CUDA events, and a cProfile of the Gluon path sorted by cumulative time.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from overhead import cprofile_text, host_and_wall  # noqa: E402
from sus_fx.kernels import dispatch, sus_bwd, union_hopper  # noqa: E402


def host_ms(fn):
    return host_and_wall(fn, n=100)


def gpu_ms(fn, n=50):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    args = ap.parse_args()
    n, H, D = args.n, 16, 128
    q, k, v, do = (torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    s = 1 / math.sqrt(D)
    o, lse = dispatch.forward(q, k, v, None, True, s, 0.0)
    rows = []

    def bwd(sm90):
        def f():
            sus_bwd._OVERRIDE["SM90"] = sm90
            try:
                sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, s, 32.0, 1)
            finally:
                sus_bwd._OVERRIDE.clear()
        return f

    for sm90 in (1, 0):
        h, w = host_ms(bwd(sm90))
        rows.append((f"sus_backward SM90={sm90}", h, w, gpu_ms(bwd(sm90))))
    n_rb = triton.cdiv(n, 128)
    keys = torch.zeros(H * n_rb, dtype=torch.int32, device="cuda")
    k1 = torch.ones(H * n, dtype=torch.float32, device="cuda")
    U_cap = sus_bwd.union_capacity(32.0, n, 128)  # what sus_backward uses at c=32
    impl = lambda: union_hopper.union_sm90_impl(q, k, lse, keys, k1, U_cap, triton.cdiv(n, n_rb), s * 1.44, 1e-5,
                                                5.0, True, True, D, 4)
    rows.append(("union_sm90_impl", *host_ms(impl), gpu_ms(impl)))
    rows.append(("k_descriptor", *host_ms(lambda: union_hopper.k_descriptor(k)), float("nan")))
    rows.append(("q_smem_layout", *host_ms(lambda: union_hopper.q_smem_layout(q.dtype, D)), float("nan")))
    rows.append(("_new_outputs", *host_ms(lambda: union_hopper._new_outputs(q, k, U_cap, True, D)), float("nan")))
    cols, ucnt, zk, zv = union_hopper._new_outputs(q, k, U_cap, True, D)
    desc, lay = union_hopper.k_descriptor(k), union_hopper.q_smem_layout(q.dtype, D)

    def raw():
        union_hopper.union_kernel_sm90[(n_rb, H)](
            q, desc, lse, keys, cols, ucnt, k1, zk, zv, q.stride(0), q.stride(1), q.stride(2),
            H, 1, H, n, n, n_rb, U_cap, triton.cdiv(n, n_rb), s * 1.44, 1e-5, 5.0,
            CAUSAL=True, D=D, NB=4, ZERO=True, DV_=D, DVP=D, q_smem_layout=lay, TMAX=128, num_warps=4)
    rows.append(("union_kernel_sm90[grid](...) only", *host_ms(raw), gpu_ms(raw)))
    cnt = torch.empty(1, dtype=torch.int64, device="cuda")
    bk = lambda: sus_bwd._block_keys_kernel[(1, H)](keys, cnt, 0, 1, n_rb, SEED_PTR=False, R=128, num_warps=4)
    rows.append(("_block_keys_kernel launch", *host_ms(bk), gpu_ms(bk)))
    rows.append(("torch.empty x1", *host_ms(lambda: torch.empty(1, device="cuda")), float("nan")))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, n={n}, H={H}, D={D}")
    print("| what | host enqueue ms | wall ms (no sync inside) | GPU ms (events) |")
    print("|---|---|---|---|")
    for name, h, w, g in rows:
        print(f"| {name} | {h:.3f} | {w:.3f} | {g:.3f} |")
    print("cProfile, 50 sus_backward calls with the Gluon union, by cumulative time:")
    print(cprofile_text(bwd(1), 50, "cumulative", 40))


if __name__ == "__main__":
    main()
