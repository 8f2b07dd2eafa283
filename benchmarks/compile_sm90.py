"""Compile the backward's Triton kernels for an H100/H200 (sm_90) on a machine without a GPU and
report what the compiler made of them: registers, spills, shared memory, and whether the union
pass's K tiles are loaded by pipelined async copies.

    python3 benchmarks/compile_sm90.py [--d 128] [--dtype bf16] [--ttgir DIR]

Triton's front end, its MLIR passes and the ptxas shipped in its wheel all run on the CPU. The
launch's specializations are reproduced (unit strides as constants, 16-divisible pointers and
strides), as a real launch on contiguous tensors gets them: without them the K loads are not
pipelined at all and the numbers would mislead. Used by tests/test_kernels_compile_sm90.py.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sus_fx.kernels import sus_bwd

_PTR = {"Q": "q", "K": "q", "V": "q", "O": "q", "DO": "q", "DQ": "q", "LSE": "*fp32", "MASK": "*u8",
        "TW": "*i64", "TI": "*i32", "NT": "*i32", "COLS": "*i32", "CNT": "*i32", "K1": "*fp32",
        "ZK": "*fp32", "ZV": "*fp32", "DK": "*fp32", "DV": "*fp32", "KEPT": "*i32", "SEEDS": "*i64"}
_UNIT_STRIDES = ("sqd", "skd", "svd", "sod", "sdod", "smn")
_FLOATS = ("a", "log2c", "gamma", "sm_scale", "inv_c")


def _constexprs(name, D, cfg, dtype):
    ieee = dtype == "fp32"
    if name == "_key_l1_kernel":
        return dict(D=D, DP=cfg["DP"], R=64), 4, 1
    if name == "_union_expand_kernel":
        return dict(BN=cfg["BN"], WC=cfg["WC"]), cfg["warps_e"], 1
    if name == "_union_kernel":
        return (dict(HAS_MASK=False, MASK_BOOL=False, CAUSAL=True, BM=cfg["BM"], BN=cfg["BN"], D=D, DP=cfg["DP"],
                     IEEE=ieee, SEED_PTR=True, ZERO=True, DVP=cfg["DVP"], DV_=D, PROBE=0),
                cfg["warps_a"], cfg["stages_a"])
    return (dict(HAS_MASK=False, MASK_BOOL=False, CAUSAL=True, EXACT=False, DETERMINISTIC=False, STATS=False,
                 BM=cfg["BM"] // cfg["SUB"], BN=cfg["BN"], UB=cfg["UB"], D=D, DP=cfg["DP"], DV_=D, DVP=cfg["DVP"],
                 IEEE=ieee, SUB=cfg["SUB"], SEED_PTR=True, PREFETCH=int(cfg["prefetch_cols"])),
            cfg["warps_b"], cfg["stages_b"])


def compile_kernel(name, D=128, dtype="bf16", overrides=None):
    """(CompiledKernel, ptxas -v output) for one kernel as sus_backward launches it (causal, no mask);
    `overrides`: keys of sus_bwd.config() to change, as the benchmarks' --tune does."""
    import torch
    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    cfg = dict(sus_bwd.config(D, D, tdt), **(overrides or {}))
    kern = getattr(sus_bwd, name)
    names = kern.arg_names
    consts, warps, stages = _constexprs(name, D, cfg, dtype)
    sig, attrs = {}, {}
    for i, n in enumerate(names):
        if n in consts:
            sig[n] = "constexpr"
        elif n in _UNIT_STRIDES:
            sig[n], consts[n] = "constexpr", 1
        elif n in _PTR:
            sig[n] = "*" + dtype if _PTR[n] == "q" else _PTR[n]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif n in _FLOATS:
            sig[n] = "fp32"
        elif n == "seed":
            sig[n] = "i64"
        else:
            sig[n] = "i32"
            if n.startswith("s") or n in ("Lq", "Lk"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=kern, signature=sig, attrs=attrs,
                    constexprs={(names.index(n),): v for n, v in consts.items()})
    cc = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    info = _ptxas(cc.asm["ptx"])
    return cc, info


def _ptxas(ptx_text):
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        ptx = os.path.join(d, "k.ptx")
        with open(ptx, "w") as f:
            f.write(ptx_text)
        return subprocess.run([ptxas, "-arch=sm_90a", "-v", ptx, "-o", os.path.join(d, "k.cubin")],
                              capture_output=True, text=True, check=True).stderr


def compile_gluon_union(D=128, dtype="bf16", NB=4, FOLD=False, PAIR=False, maxnreg=0):
    """(CompiledKernel, ptxas -v output) for union_hopper.union_kernel_sm90 (causal, zeroing on; K
    through a TMA descriptor)."""
    import torch
    from triton.experimental.gluon._runtime import GluonASTSource
    from sus_fx.kernels import union_hopper
    fn = union_hopper.union_kernel_sm90
    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    consts = dict(CAUSAL=True, D=D, NB=NB, ZERO=True, DV_=D, DVP=D, q_smem_layout=union_hopper.q_smem_layout(tdt, D),
                  TMAX=1024, FOLD=FOLD, fold_layout=union_hopper.fold_layout(tdt) if FOLD else None, PAIR=PAIR)
    rows = 128 if PAIR else 64
    kl = union_hopper.gl.NVMMASharedLayout.get_default_for([1, 1, rows, D], union_hopper._gl_dtype(tdt))
    ptrs = {"Q": "*" + dtype, "k_desc": f"tensordesc<{dtype}[1, 1, {rows}, {D}],{kl!r}>", "LSE": "*fp32", "KEYS": "*i32",
            "COLS": "*i32", "CNT": "*i32", "K1": "*fp32", "ZK": "*fp32", "ZV": "*fp32"}
    sig, attrs = {}, {}
    for i, n in enumerate(fn.arg_names):
        if n in consts:
            sig[n] = "constexpr"
        elif n in ptrs:
            sig[n] = ptrs[n]
            if n != "k_desc":
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif n in _FLOATS:
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
            if n.startswith("s"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = GluonASTSource(fn, sig, {(fn.arg_names.index(n),): v for n, v in consts.items()}, attrs)
    cc = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, num_stages=1, **({"maxnreg": maxnreg} if maxnreg else {})))
    return cc, _ptxas(cc.asm["ptx"])


def report(name, D=128, dtype="bf16"):
    if name.startswith("union_kernel_sm90"):  # "_fold": FOLD=True; "_pair": PAIR=True (3 pair buffers)
        pair = name.endswith("_pair")
        cc, info = compile_gluon_union(D, dtype, NB=3 if pair else 4, FOLD="_fold" in name, PAIR=pair)
    else:
        cc, info = compile_kernel(name, D, dtype)
    regs = int(re.search(r"Used (\d+) registers", info).group(1))
    spill = sum(int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", info))
    ttgir = cc.asm["ttgir"]
    return dict(kernel=name, D=D, dtype=dtype, registers=regs, spill_bytes=spill,
                shared_bytes=int(cc.metadata.shared), async_copies=ttgir.count("async_copy_global_to_local"),
                wgmma=ttgir.count("warp_group_dot "), ttgir=ttgir,
                # ptxas C7514: wgmma serialized because registers of an in-flight MMA are read
                wgmma_serialized="C7514" in info,
                mma_waits_one=cc.asm["ptx"].count("wgmma.wait_group.sync.aligned 1;"),
                # FOLD: two wgmma groups per tile, so one tile outstanding is two groups
                mma_waits_two=cc.asm["ptx"].count("wgmma.wait_group.sync.aligned 2;"))


KERNELS = ("_key_l1_kernel", "_union_kernel", "_union_expand_kernel", "_sparse_bwd_kernel", "union_kernel_sm90",
           "union_kernel_sm90_fold", "union_kernel_sm90_fold_pair")


def _kernels(D):
    """KERNELS at head dim D: PAIR is the D = 64 shape (at 128 its buffers leave one CTA per SM)."""
    return [n for n in KERNELS if not n.endswith("_pair") or D == 64]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", default="128,64")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--ttgir", default="", help="write each kernel's TTGIR into this folder")
    ap.add_argument("--json", action="store_true", help="one JSON line of the rows instead of the table")
    a = ap.parse_args()
    if a.json:
        import json
        rows = [{k: v for k, v in report(n, int(D), a.dtype).items() if k != "ttgir"}
                for D in a.d.split(",") for n in _kernels(int(D))]
        print(json.dumps(rows))
        return
    print(f"triton {triton.__version__}, target sm_90 (compiled on this machine, no GPU)\n")
    print("| kernel | D | dtype | registers | spill bytes | shared KB | async copies | wgmma ops | wgmma serialized |")
    print("|---|---|---|---|---|---|---|---|---|")
    for D in map(int, a.d.split(",")):
        for name in _kernels(D):
            r = report(name, D, a.dtype)
            if a.ttgir:
                os.makedirs(a.ttgir, exist_ok=True)
                with open(os.path.join(a.ttgir, f"{name}_d{D}_{a.dtype}.ttgir"), "w") as f:
                    f.write(r["ttgir"])
            print(f"| {name} | {D} | {a.dtype} | {r['registers']} | {r['spill_bytes']} | {r['shared_bytes'] / 1024:.0f} | "
                  f"{r['async_copies']} | {r['wgmma']} | {r['wgmma_serialized']} |")


if __name__ == "__main__":
    main()
