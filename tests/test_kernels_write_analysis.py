"""What torch.compile makes of the backward kernels: what it believes they write, and how it types
their float arguments.

When the CUDA backward is traced (sus::attention_backward_triton, a triton_op), torch reads each
kernel's Triton IR to find the tensors it writes, and functionalizes those writes. A kernel that
*looks* like it writes Q, K or V makes the compiled backward try to copy into a leaf tensor that
requires grad, and compilation fails (seen on the H200 before the union kernel's body was
inlined: its stored slots depended on a helper call that loaded K, and torch's analysis follows
call arguments). The analysis only needs Triton's front end, so it runs here on CPU against a
CUDA target.

Inductor's launcher types Python float arguments as fp64 where a direct launch types them fp32;
the kernels must cast them (fp64 per-entry math ran 2.9x slower on the H200, and an fp64 operand
breaks the fp32 dots). The second test builds the IR with floats typed fp64.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

EXPECTED = {"_key_l1_kernel": ["K1"], "_union_kernel": ["NT", "TI", "TW", "ZK", "ZV"], "_union_expand_kernel": ["CNT", "COLS"],
            "_sparse_bwd_kernel": ["DK", "DQ", "DV"]}
SAMPLED = ["_key_l1_kernel", "_union_kernel", "_union_expand_kernel", "_sparse_bwd_kernel"]
CASES = [(mask, c) for mask in (None, "bool", "float") for c in (8.0, float("inf"))]


class _CudaTarget:
    """Stands in for Triton's active driver: IR generation only asks it for the target."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", 90, 32)


def _launches(mod, attn_mask, c, dtype=torch.float32):
    """(kernel, kwargs) of each launch sus_backward makes on the triton_op path (not run)."""
    seen = []

    class Capture:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                named = dict(zip(self.kernel.arg_names, args))
                named.update({k: v for k, v in kwargs.items() if k in self.kernel.arg_names})
                seen.append((self.kernel, named))
            return launch

    g = torch.Generator().manual_seed(0)
    B, H, Hkv, L, D = 1, 4, 2, 64, 64
    q, out, do = (torch.randn(B, H, L, D, generator=g).to(dtype) for _ in range(3))
    k, v = (torch.randn(B, Hkv, L, D, generator=g).to(dtype) for _ in range(2))
    lse = torch.randn(B, H, L, generator=g)
    seeds = torch.tensor([3, 4], dtype=torch.int64)
    mod.sus_backward(do, q, k, v, attn_mask, out, lse, True, D ** -0.5, c, (seeds, 1, 0),
                     deterministic=False, launch=Capture)
    return seen


def _written_per_case():
    """{case: [(kernel, sorted written args)]}; needs compiled (not interpreted) kernels."""
    import triton.runtime as trt
    from torch._higher_order_ops.triton_kernel_wrap import identify_accessed_tensors
    from sus_fx.kernels import sus_bwd
    trt.driver.set_active(_CudaTarget())
    L = 64
    result = {}
    for mask, c in CASES:
        attn_mask = None if mask is None else (torch.rand(L, L) > 0.3 if mask == "bool" else torch.randn(L, L))
        result[f"{mask}-{c}"] = [
            (kern.fn.__name__, sorted(d.name for d in identify_accessed_tensors(kern, kw, {}).read_writes.writes))
            for kern, kw in _launches(sus_bwd, attn_mask, c)]
    return result


def _ir_with_fp64_floats():
    """{dtype: [(kernel, ok, f64 tensor types in the IR)]} with every float argument typed fp64."""
    import re

    import triton.runtime as trt
    import triton.runtime.jit as jit
    from torch._higher_order_ops.triton_kernel_wrap import generate_ttir
    from sus_fx.kernels import sus_bwd
    trt.driver.set_active(_CudaTarget())
    orig = jit.mangle_type
    jit.mangle_type = lambda arg, *a, **k: "fp64" if isinstance(arg, float) else orig(arg, *a, **k)
    result = {}
    for dtype in (torch.float32, torch.bfloat16):
        rows = []
        for kern, kw in _launches(sus_bwd, None, 8.0, dtype):
            try:
                ir = str(generate_ttir(kern, kw, {})[0])
                rows.append((kern.fn.__name__, True, sorted(set(re.findall(r"tensor<[^>]*xf64>", ir)))))
            except Exception as e:  # noqa: BLE001
                rows.append((kern.fn.__name__, False, [f"{type(e).__name__}: {str(e)[-300:]}"]))
        result[str(dtype)] = rows
    return result


def _run_fresh(mode):
    # a fresh interpreter without TRITON_INTERPRET: Triton decides interpreted-or-compiled at import
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SUS_FX_INTERPRET_KERNELS")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), mode], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_float_arguments_typed_fp64_stay_fp32_math():
    result, _ = _run_fresh("fp64")
    for dtype, rows in result.items():
        assert [name for name, _, _ in rows] == SAMPLED
        for name, ok, f64 in rows:
            assert ok and not f64, (dtype, name, f64)


def test_kernels_write_only_their_outputs():
    result, stderr = _run_fresh("writes")
    assert "assuming every input is mutated" not in stderr, stderr[-3000:]
    for mask, c in CASES:
        launches = result[f"{mask}-{c}"]
        names = [name for name, _ in launches]
        assert names == (["_sparse_bwd_kernel"] if c == float("inf") else SAMPLED)
        for name, written in launches:
            assert written == EXPECTED[name], (mask, c, name, written)


if __name__ == "__main__":
    print(json.dumps(_ir_with_fp64_floats() if sys.argv[1:] == ["fp64"] else _written_per_case()))
