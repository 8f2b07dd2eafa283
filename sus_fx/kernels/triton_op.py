"""The SUS backward as a `torch.library.triton_op`: what torch.compile sees on CUDA.

A plain custom op is opaque to Inductor: the compiled backward calls back into Python, which
launches the kernels. Registered with `triton_op` and launched through `wrap_triton`, the same
host code (sus_bwd.sus_backward) is traced instead: Inductor sees the Triton kernels (key L1 norms,
union, its expansion, sparse backward) and the few torch ops around them (casts, which it fuses), and
launches everything from its own generated code. In eager mode the op simply runs that code.

Only the paths that need no host sync go through here (ops.py decides): no deterministic mode
(it sizes buffers from the union counts), no stats recording (a host-side callback), no dropout
or mask gradient (the reference handles those).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import sus_bwd


@torch.library.triton_op("sus::attention_backward_triton", mutates_args=())
def attention_backward_triton(grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor,
                              attn_mask: Optional[Tensor], out: Tensor, lse: Tensor, seed: Tensor,
                              is_causal: bool, scale: float, c: float, seed_offset: int
                              ) -> Tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv); the sampling seed is seed[1] + seed_offset, read on the device."""
    return sus_bwd.sus_backward(grad_out, query, key, value, attn_mask, out, lse, is_causal, scale, c,
                                (seed, 1, seed_offset), deterministic=False,
                                launch=torch.library.wrap_triton)
