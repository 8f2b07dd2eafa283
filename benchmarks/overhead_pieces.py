"""Where the host time of one SUS backward goes at small n, launch by launch (GPU time beside it).

    python3 benchmarks/overhead_pieces.py [--n 2048]

Stop 12 measured sus_backward's host cost at 2k: 0.27 ms with the Triton union kernel, 0.72 ms with
the Gluon one. This times each piece alone (no sync inside the loop), the GPU time of the whole
backward by CUDA events, and a cProfile of the Gluon path sorted by cumulative time. Since stop 17
also: the union op through the dispatcher, the Gluon kernel launched without Triton's binder (from
the CompiledKernel a first launch returns), the cost of torch.library.custom_op's layers against a
plain define + impl (a trivial op), and the forward op's pieces.
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


def _trivial(x, n: int, a: float):
    return x.new_empty(4), x.new_empty(2)


def _register_trivial_ops():
    """susbench::co (torch.library.custom_op) and susbench::ll (define + impl): the same trivial
    function behind the two registrations, for the cost of the layers alone."""
    # (an explicit schema: this module's annotations are strings, which infer_schema rejects)
    torch.library.custom_op("susbench::co", _trivial, mutates_args=(),
                            schema="(Tensor x, int n, float a) -> (Tensor, Tensor)")
    global _lib
    _lib = torch.library.Library("susbench", "FRAGMENT")
    _lib.define("ll(Tensor x, int n, float a) -> (Tensor, Tensor)")
    _lib.impl("ll", _trivial, "CUDA")


def main():
    _register_trivial_ops()
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

    def raw():  # (returns the CompiledKernel)
        return union_hopper.union_kernel_sm90[(n_rb, H)](
            q, desc, lse, keys, cols, ucnt, k1, zk, zv, q.stride(0), q.stride(1), q.stride(2),
            H, 1, H, n, n, n_rb, U_cap, triton.cdiv(n, n_rb), s * 1.44, 1e-5, 5.0,
            CAUSAL=True, D=D, NB=4, ZERO=True, DV_=D, DVP=D, q_smem_layout=lay, TMAX=128, num_warps=4)
    rows.append(("union_kernel_sm90[grid](...) only", *host_ms(raw), gpu_ms(raw)))
    # the same launch without Triton's binder and cache-key computation: the CompiledKernel the
    # launch above returned, called with every argument in signature order (constexprs included)
    ck = raw()
    vals = dict(Q=q, k_desc=desc, LSE=lse, KEYS=keys, COLS=cols, CNT=ucnt, K1=k1, ZK=zk, ZV=zv, sqb=q.stride(0),
                sqh=q.stride(1), sqm=q.stride(2), H=H, G=1, Hkv=H, Lq=n, Lk=n, n_rb=n_rb, U_cap=U_cap,
                z_rows=triton.cdiv(n, n_rb), a=s * 1.44, gamma=1e-5, log2c=5.0, CAUSAL=True, D=D, NB=4, ZERO=True,
                DV_=D, DVP=D, q_smem_layout=lay, TMAX=128, FOLD=False, fold_layout=None, PAIR=False)
    ordered = [vals[name] for name in union_hopper.union_kernel_sm90.arg_names]
    direct = lambda: ck[(n_rb, H, 1)](*ordered)
    rows.append(("CompiledKernel[grid](...) (no binder)", *host_ms(direct), gpu_ms(direct)))
    ref_cols = cols.clone(), ucnt.clone()
    raw()
    torch.cuda.synchronize()
    same_raw = torch.equal(ucnt, ref_cols[1]) and torch.equal(cols, ref_cols[0])
    direct()
    torch.cuda.synchronize()
    same_direct = torch.equal(ucnt, ref_cols[1]) and torch.equal(cols, ref_cols[0])
    rows.append((f"(direct launch gives the binder launch's union: {same_raw and same_direct})",
                 float("nan"), float("nan"), float("nan")))
    new_k1 = lambda: torch.ops.sus.union_sm90.default(q, k, lse, keys, k1, U_cap, triton.cdiv(n, n_rb), s * 1.44,
                                                      1e-5, 5.0, True, True, D, 4)
    rows.append(("torch.ops.sus.union_sm90.default (dispatcher)", *host_ms(new_k1), gpu_ms(new_k1)))
    # the custom-op layers themselves: a trivial CUDA op through torch.library.custom_op and through
    # the low-level define + impl that sus_fx's ops use since stop 17
    x = torch.zeros(8, device="cuda")
    rows.append(("trivial op: plain Python function", *host_ms(lambda: _trivial(x, 3, 1.0)), float("nan")))
    rows.append(("trivial op: torch.library.custom_op", *host_ms(lambda: torch.ops.susbench.co.default(x, 3, 1.0)),
                 float("nan")))
    rows.append(("trivial op: Library define + impl", *host_ms(lambda: torch.ops.susbench.ll.default(x, 3, 1.0)),
                 float("nan")))
    from sus_fx import ops
    fwd_op = lambda: torch.ops.sus.attention_forward.default(q, k, v, None, 0.0, True, s, 32.0)
    rows.append(("torch.ops.sus.attention_forward.default", *host_ms(fwd_op), gpu_ms(fwd_op)))
    rows.append(("ops._forward_impl", *host_ms(lambda: ops._forward_impl(q, k, v, None, 0.0, True, s)),
                 float("nan")))
    rows.append(("dispatch.forward", *host_ms(lambda: dispatch.forward(q, k, v, None, True, s, 0.0)), float("nan")))
    rows.append(("ops._draw_seeds", *host_ms(lambda: ops._draw_seeds(q.device)), float("nan")))
    cud = lambda: torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, True, False, scale=s)
    rows.append(("aten._scaled_dot_product_cudnn_attention", *host_ms(cud), gpu_ms(cud)))
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
