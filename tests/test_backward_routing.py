"""Which backward a compiled CUDA graph gets: the traced triton_op (Inductor launches the kernels)
or the opaque op (the same kernels, or the reference, launched from Python).

ops._triton_op_takes decides while the backward is traced, from fake tensors, so it can be checked
here with fake CUDA tensors on a CPU machine. Each "opaque" case is there for a reason measured on
the GPU or a host-side need: bool masks (Inductor cannot lower the kernels' uint8 view of them),
deterministic mode and stats recording (host syncs), dropout and mask gradients (the reference).
"""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import sus_fx
from sus_fx import ops


def _takes(dtype=torch.bfloat16, mask=None, dropout_p=0.0, mask_grad=False, device="cuda"):
    with FakeTensorMode():
        q = torch.empty(1, 2, 64, 64, device=device, dtype=dtype)
        m = None
        if mask is not None:
            m = torch.empty(64, 64, device=device, dtype=torch.bool if mask == "bool" else dtype)
        return ops._triton_op_takes(q, q, q, m, dropout_p, mask_grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("mask", [None, "float"])
def test_traced_kernels_take_the_plain_cases(dtype, mask):
    assert _takes(dtype, mask)


@pytest.mark.parametrize("case", ["bool mask", "dropout", "mask grad", "cpu"])
def test_opaque_op_keeps_what_the_traced_path_cannot_do(case):
    kw = {"bool mask": dict(mask="bool"), "dropout": dict(dropout_p=0.1), "mask grad": dict(mask="float", mask_grad=True),
          "cpu": dict(device="cpu")}[case]
    assert not _takes(**kw)


def test_deterministic_mode_and_stats_recording_keep_the_opaque_op():
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert not _takes()
    finally:
        torch.use_deterministic_algorithms(prev)
    with sus_fx.stats():
        assert not _takes()
    assert _takes()
