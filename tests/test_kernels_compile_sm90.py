"""The union pass as the H100/H200 compiler sees it, checked on CPU (CI has no GPU).

benchmarks/compile_sm90.py compiles the backward's kernels for sm_90 with Triton's passes and the
ptxas in its wheel. The union pass is compute bound and relies on two things the source does not
show: its K tiles are loaded by pipelined async copies (a change of the load's form, e.g. a
non-unit stride or a load that feeds something else first, silently loses that), and two CTAs fit
on one SM (registers, shared memory), which is what overlaps one CTA's MMAs with the other's
per-entry epilogue. A kernel change that breaks either shows up here before a GPU run.
The Gluon union kernel (union_hopper.py) is checked for what it exists for: no serialized wgmma.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SM90_REGS, SM90_SMEM = 65536, 227 * 1024  # per SM; at most 227 KB of shared memory per CTA group


@pytest.fixture(scope="module")
def compile_run():
    """(rows by (kernel, D), the compiler's stderr)"""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SUS_FX_INTERPRET_KERNELS")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "compile_sm90.py"), "--json", "--d", "128,64"],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "ptxas" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("this Triton wheel ships no ptxas")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {(r["kernel"], r["D"]): r for r in json.loads(proc.stdout.strip().splitlines()[-1])}, proc.stderr


@pytest.fixture(scope="module")
def rows(compile_run):
    return compile_run[0]


def test_no_compiler_diagnostics(compile_run):
    """A kernel can compile and still make MLIR print "error: ..." on stderr (stop 18: a gl.join in
    the PAIR epilogue did, once per process); users would see it in their training logs."""
    assert "error:" not in compile_run[1], compile_run[1][-3000:]


@pytest.mark.parametrize("D", [128, 64])
def test_union_pass_pipelined_two_ctas_per_sm(rows, D):
    r = rows[("_union_kernel", D)]
    assert r["async_copies"] > 0, r  # K tiles streamed by cp.async, not loaded through registers
    assert r["wgmma"] >= 1, r
    assert r["spill_bytes"] == 0, r
    threads = 4 * 32
    assert 2 * r["registers"] * threads <= SM90_REGS and 2 * r["shared_bytes"] <= SM90_SMEM, r


@pytest.mark.parametrize("D,variant", [(128, ""), (64, ""), (128, "_fold"), (64, "_fold"), (64, "_fold_pair")])
def test_gluon_union_keeps_an_mma_in_flight(rows, D, variant):
    """union_hopper's point is that MMA(t+1) runs while tile t's epilogue does: ptxas must not
    serialize the wgmmas (C7514: registers of an in-flight MMA read, e.g. an accumulator copied at a
    loop's back edge), and the loop waits with one tile's MMA outstanding (FOLD: two wgmma groups).
    PAIR (K two tiles per TMA, the D = 64 default) too, with two CTAs per SM."""
    fold = "_fold" in variant
    r = rows[("union_kernel_sm90" + variant, D)]
    assert not r["wgmma_serialized"], r
    assert (r["mma_waits_two"] if fold else r["mma_waits_one"]) >= 1, r
    assert r["spill_bytes"] == 0, r
    threads = 4 * 32
    assert 2 * r["registers"] * threads <= SM90_REGS and 2 * r["shared_bytes"] <= SM90_SMEM, r


def test_every_kernel_compiles_for_sm90(rows):
    assert {k for k, _ in rows} == {"_key_l1_kernel", "_union_kernel", "_union_expand_kernel", "_sparse_bwd_kernel",
                                    "union_kernel_sm90", "union_kernel_sm90_fold", "union_kernel_sm90_fold_pair"}
    for r in rows.values():
        assert r["registers"] <= 255, r


def test_gluon_union_eligibility_reads_only_shapes():
    """union_hopper.supported runs while torch.compile traces the backward, on fake tensors: it may
    read shapes, strides and dtypes, never a data pointer (a warning, an error in some versions)."""
    import warnings
    from unittest import mock

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    uh = pytest.importorskip("sus_fx.kernels.union_hopper")
    with mock.patch("torch.cuda.get_device_capability", return_value=(9, 0)), warnings.catch_warnings():
        warnings.simplefilter("error")
        with FakeTensorMode():
            q = torch.empty(1, 4, 1024, 64, device="cuda", dtype=torch.bfloat16)
            k = torch.empty(1, 2, 1024, 64, device="cuda", dtype=torch.bfloat16)
            assert uh.supported(q, k, k, None, False)
            assert not uh.supported(q.float(), k.float(), k.float(), None, False)
            assert not uh.supported(q, k, k, None, True)


def test_gluon_union_op_fake_shapes():
    """sus::union_sm90's fake (what torch.compile sees): U_cap union columns and a union size per
    128-row block, and zeroed dK/dV accumulators of the key rows only when asked for."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    pytest.importorskip("sus_fx.kernels.union_hopper")
    with FakeTensorMode():
        q = torch.empty(2, 4, 300, 64, device="cuda", dtype=torch.bfloat16)
        k = torch.empty(2, 2, 500, 64, device="cuda", dtype=torch.bfloat16)
        lse = torch.empty(2, 4, 300, device="cuda")
        keys = torch.empty(2 * 4 * 3, device="cuda", dtype=torch.int32)
        k1 = torch.empty(2 * 2 * 500, device="cuda")
        for zero, (zk_shape, zv_shape) in ((True, ((2000, 64), (2000, 32))), (False, ((1, 1), (1, 1)))):
            cols, cnt, zk, zv = torch.ops.sus.union_sm90(q, k, lse, keys, k1, 64, 167, 0.18, 1e-5, 5.0,
                                                         True, zero, 32, 4)
            assert cols.shape == (24, 64) and cols.dtype == torch.int32
            assert cnt.shape == (24,) and cnt.dtype == torch.int32
            assert zk.shape == zk_shape and zv.shape == zv_shape and zk.dtype == torch.float32


def test_gluon_union_only_with_a_checked_triton(monkeypatch):
    """Another Triton release keeps the Triton union kernel (Gluon's API moves) unless asked."""
    from sus_fx.kernels import sus_bwd
    monkeypatch.setattr(sus_bwd.triton, "__version__", "9.9.0")
    monkeypatch.delenv("SUS_FX_GLUON", raising=False)
    assert sus_bwd._sm90_union() is None
    monkeypatch.setenv("SUS_FX_GLUON", "1")
    assert sus_bwd._sm90_union() is not None


def test_gluon_union_fold_refuses_fp16():
    """FOLD's three parts of -lse2 / a are in Q's dtype; in fp16 one can overflow to -inf and empty a
    union (a wrong gradient): sus_backward folds only bf16, and a direct call says so."""
    import torch

    uh = pytest.importorskip("sus_fx.kernels.union_hopper")
    q = torch.empty(1, 1, 128, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="fold needs bfloat16"):
        uh.union_sm90_impl(q, q, torch.empty(1, 1, 128), torch.empty(1, dtype=torch.int32), torch.empty(128),
                           64, 128, 0.18, 1e-5, 5.0, True, False, 64, 4, True)


def test_gluon_union_launch_key_follows_triton_specialization():
    """union_hopper launches a cached CompiledKernel without Triton's binder (host time); the cache
    key must change wherever Triton 3.6 would specialize the launch differently, or a kernel compiled
    for one argument class would run on another: an integer that becomes 1, a multiple of 16 or too
    wide for int32, a tensor's 16-byte alignment or dtype, a constexpr. Floats are not specialized."""
    import torch

    uh = pytest.importorskip("sus_fx.kernels.union_hopper")
    dev = torch.device("cuda", 0)
    cx = dict(CAUSAL=True, D=64, NB=4, ZERO=True, DV_=64, DVP=64, TMAX=128, FOLD=True, PAIR=False)
    t = torch.empty(64, dtype=torch.bfloat16)
    k = torch.empty(1, 1, 128, 64, dtype=torch.bfloat16)
    base = (t, uh.k_descriptor(k), 48, 0.5)
    key = uh.launch_key(base, cx, dev)
    assert uh.launch_key(base, dict(cx), dev) == key
    assert uh.launch_key((t, base[1], 48, 0.25), cx, dev) == key  # another float: same kernel
    assert uh.launch_key((t, base[1], 32, 0.5), cx, dev) == key  # another multiple of 16: same kernel
    for other in (t[1:], t.float(), 47, 1, 2 ** 31 + 16):
        args = (other, base[1], 48, 0.5) if isinstance(other, torch.Tensor) else (t, base[1], other, 0.5)
        assert uh.launch_key(args, cx, dev) != key, other
    assert uh.launch_key(base, dict(cx, CAUSAL=False), dev) != key
    assert uh.launch_key(base, dict(cx, PAIR=True), dev) != key
    # PAIR's descriptor has a box of two tiles: another kernel
    assert uh.launch_key((t, uh.k_descriptor(k, pair=True), 48, 0.5), cx, dev) != key
    assert uh.launch_key(base, cx, torch.device("cuda", 1)) != key
    assert len(uh._ARG_ORDER) == 34  # the kernel's signature: runtime arguments then constexprs
