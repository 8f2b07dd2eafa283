"""The SUS attention op: `torch.ops.sus.attention` and its autograd.

Three registered ops:

    sus::attention           the public op, SDPA's signature plus `c`. Composite: it checks
                             and canonicalizes its inputs, then calls attention_forward.
    sus::attention_forward   exact forward -> (out, lse, seed). register_autograd backs it with
    sus::attention_backward  the SUS estimator -> (dq, dk, dv, dmask).

The forward saves q, k, v, mask, out and the per-row log-sum-exp, never the Lq x Lk weights.
`seed` holds two seeds drawn in the forward from torch's default generator: the dropout seed
(the backward regenerates the same mask) and the sampling seed of the backward. Drawing both in
the forward makes a forward/backward pair reproducible under torch.manual_seed (and under
opcheck's seeded forward) while every step still gets fresh masks. The sampling seed also holds
the distributed rank (added when the forward runs, never at trace time); a second backward through
the same graph (retain_graph) adds a call count.

On CUDA the backward is `sus::attention_backward_triton` (kernels/triton_op.py) where it can be:
torch.compile then traces its Triton kernels instead of calling an opaque op. Plain eager calls
skip the custom-op layers (_EagerAttention) and run the same forward and backward code.

Both inner ops carry Tag.nondeterministic_seeded so that AOTAutograd's partitioner never
recomputes them (a recomputed forward would draw a different dropout mask).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import reference

_lib = torch.library.Library("sus", "FRAGMENT")
_lib.define(
    "attention(Tensor query, Tensor key, Tensor value, Tensor? attn_mask=None, float dropout_p=0.0, "
    "bool is_causal=False, float? scale=None, bool enable_gqa=False, *, float c=32.0) -> Tensor"
)

_SEED_HIGH = 1 << 62


# ----------------------------------------------------------------------------------------------
# Input checks: every problem is a ValueError that names the argument and the shapes.

def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_inputs(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor], dropout_p: float,
                 scale: Optional[float], enable_gqa: bool, c: float) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise ValueError(f"sus attention: {name} must be a Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"sus attention: {name} must be floating point, got {t.dtype}")
    if not (query.dim() == key.dim() == value.dim()) or query.dim() not in (3, 4):
        raise ValueError(
            "sus attention: query, key and value must all be 4-D [B, H, L, E] (or all 3-D [B, L, E]); got "
            f"query {_shape(query)}, key {_shape(key)}, value {_shape(value)}")
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(f"sus attention: query, key and value must share a dtype; got query {query.dtype}, "
                         f"key {key.dtype}, value {value.dtype}")
    if not (query.device == key.device == value.device):
        raise ValueError(f"sus attention: query, key and value must be on one device; got query {query.device}, "
                         f"key {key.device}, value {value.device}")
    def shapes() -> str:  # (built only for an error message: eager calls run this check every time)
        return f"query {_shape(query)}, key {_shape(key)}, value {_shape(value)}"

    if query.shape[0] != key.shape[0] or key.shape[0] != value.shape[0]:
        raise ValueError(f"sus attention: batch sizes differ: {shapes()}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"sus attention: key and value must have the same length (dim -2): {shapes()}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"sus attention: query and key must have the same head dim (dim -1): {shapes()}")
    if query.dim() == 4:
        H, Hk, Hv = query.shape[1], key.shape[1], value.shape[1]
        if Hk != Hv:
            raise ValueError(f"sus attention: key and value must have the same number of heads: {shapes()}")
        if enable_gqa:
            if Hk == 0 or H % Hk != 0:
                raise ValueError(f"sus attention: with enable_gqa, query heads ({H}) must be a multiple of "
                                 f"key/value heads ({Hk}): {shapes()}")
        elif H != Hk:
            raise ValueError(f"sus attention: query has {H} heads and key/value {Hk}; pass enable_gqa=True "
                             f"for grouped-query attention: {shapes()}")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise ValueError(f"sus attention: attn_mask must be a Tensor or None, got {type(attn_mask).__name__}")
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            raise ValueError(f"sus attention: attn_mask must be bool or floating point, got {attn_mask.dtype}")
        if attn_mask.device != query.device:
            raise ValueError(f"sus attention: attn_mask is on {attn_mask.device}, query on {query.device}")
        target = tuple(query.shape[:-1]) + (key.shape[-2],)
        ok = attn_mask.dim() <= len(target) and all(
            m == 1 or m == t for m, t in zip(reversed(attn_mask.shape), reversed(target)))
        if not ok:
            raise ValueError(f"sus attention: attn_mask of shape {_shape(attn_mask)} does not broadcast to "
                             f"[{', '.join(str(s) for s in target)}] ({shapes()})")
    if isinstance(dropout_p, torch.SymFloat):
        pass  # symbolic under dynamic shapes (e.g. read with .item()); checked when it is concrete
    elif not isinstance(dropout_p, (int, float)) or not (0.0 <= float(dropout_p) < 1.0):
        raise ValueError(f"sus attention: dropout_p must be in [0, 1), got {dropout_p!r}")
    if scale is not None and not isinstance(scale, torch.SymFloat) and not math.isfinite(float(scale)):
        raise ValueError(f"sus attention: scale must be finite, got {scale!r}")
    if not isinstance(c, (int, float)) or math.isnan(float(c)) or float(c) <= 0:
        raise ValueError(f"sus attention: c must be a number > 0 (float('inf') for the exact backward), got {c!r}")


# ----------------------------------------------------------------------------------------------
# Forward

def _rank() -> int:
    d = torch.distributed
    return d.get_rank() if d.is_available() and d.is_initialized() else 0


def sample_seed_offset(backward_call: int = 0) -> int:
    """Added to the forward's sampling seed for a second backward through a retained graph.
    (Eager only: under torch.compile the backward is traced once and this is a constant.)"""
    return (backward_call * 0xBF58476D1CE4E5B9) % _SEED_HIGH


def rank_seed_offset() -> int:
    """Added to the sampling seed when the forward draws it (_draw_seeds, at run time: in the
    opaque sus::attention_forward when traced, in _EagerAttention for plain eager calls). The backward
    adds nothing for the rank: it reads that seed (plus the retain_graph count, sample_seed_offset).
    Data-parallel ranks are often seeded alike; without the rank they would draw the same masks,
    and averaging their gradients would not average the SUS noise away. Never baked into a
    compiled graph (a graph compiled, or cached, on rank 0 must not carry rank 0's offset to rank 1)."""
    return (_rank() * 0x9E3779B97F4A7C15) % _SEED_HIGH


def _draw_seeds(device: torch.device) -> Tensor:
    # [dropout seed, sampling seed] from torch's default generator of the device. The rank goes
    # into the sampling seed only: dropout stays what torch's own dropout would be on that rank.
    seed = torch.randint(0, _SEED_HIGH, (2,), dtype=torch.int64, device=device)
    off = rank_seed_offset()
    if off:
        seed[1:].add_(off).remainder_(_SEED_HIGH)
    return seed


def _cpu_flash_forward(q, k, v, mask, is_causal, scale):
    """torch's CPU flash kernel returns the LSE we need. It wants equal head dims, one head
    count, a float mask, and not mask and causal together."""
    # The kernel misreads inputs whose last dim is strided (seen on torch 2.13); SDPA's front end
    # makes them contiguous before calling it, and so do we.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    G = q.shape[1] // k.shape[1]
    if G > 1:
        k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
    float_mask = None
    if mask is not None:
        if mask.dtype == torch.bool:
            float_mask = torch.zeros(mask.shape, dtype=q.dtype).masked_fill_(~mask, float("-inf"))
        else:
            # A large finite fill (finfo(float32).min, -1e9) must stay finite in fp16/bf16, as it
            # does in eager code that builds the mask in q's dtype: fully masked rows stay uniform.
            float_mask = mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
        if is_causal:
            Lq, Lk = q.shape[2], k.shape[2]
            causal = torch.ones(Lq, Lk, dtype=torch.bool).tril_()
            float_mask = float_mask.masked_fill(~causal, float("-inf"))
            is_causal = False
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, is_causal, attn_mask=float_mask, scale=scale)
    return out.contiguous(), lse.float().contiguous()


def _use_cpu_flash(q, k, v, dropout_p) -> bool:
    return (q.device.type == "cpu" and dropout_p == 0.0 and q.shape[-1] == v.shape[-1]
            and q.dtype in (torch.float32, torch.bfloat16, torch.float16) and q.numel() > 0 and k.shape[2] > 0)


def _forward_impl(query, key, value, attn_mask, dropout_p, is_causal, scale):
    if _use_cpu_flash(query, key, value, dropout_p):
        out, lse = _cpu_flash_forward(query, key, value, attn_mask, is_causal, scale)
        return out.contiguous(), lse.contiguous(), _draw_seeds(query.device)
    from .kernels import dispatch
    # The forward kernel is launched before the seeds are drawn (only the backward reads them): the
    # GPU starts on it one launch and ~0.1 ms of host time sooner (a gap seen at 16k on the H200,
    # benchmarks/gaps.py).
    res = dispatch.forward(query, key, value, attn_mask, is_causal, scale, dropout_p)
    seed = _draw_seeds(query.device)
    if res is not None:
        out, lse = res
    else:
        out, lse = reference.forward(query, key, value, attn_mask, is_causal, scale, dropout_p, int(seed[0]))
    return out.contiguous(), lse.contiguous(), seed


# The inner ops are defined with torch.library's low-level API (define + impl + register_fake),
# not torch.library.custom_op: a compiled graph calls them once per layer per step, and custom_op's
# wrappers (a dynamo-disable frame and an aliasing check around every call) cost 19-29 us per call
# against 8-13 us for define + impl on the H200 machines' hosts (a trivial op, torch 2.11;
# benchmarks/results/h200_stop17_*_overhead_pieces.txt), where GPT-124M's 8k step is close to bound
# by host time (notes/KERNELS.md, stops 16-17). The impls return fresh tensors only, which is what
# custom_op's aliasing check would have enforced.
_FORWARD_SCHEMA = ("(Tensor query, Tensor key, Tensor value, Tensor? attn_mask, float dropout_p, bool is_causal, "
                   "float scale, float c) -> (Tensor, Tensor, Tensor)")
_lib.define("attention_forward" + _FORWARD_SCHEMA, tags=(torch.Tag.nondeterministic_seeded,))


def attention_forward(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor], dropout_p: float,
                      is_causal: bool, scale: float, c: float) -> Tuple[Tensor, Tensor, Tensor]:
    """sus::attention_forward: exact attention on canonical 4-D inputs -> (out, lse, seeds [dropout,
    sampling])."""
    return _forward_impl(query, key, value, attn_mask, dropout_p, is_causal, scale)


_lib.impl("attention_forward", attention_forward, "CompositeExplicitAutograd")

# The same op without an autograd formula: what compiled graphs call (sus_fx/post_grad.py swaps it
# in after AOTAutograd's partition, where the formula's Python dispatch layer only costs host time).
_lib.define("attention_forward_graph" + _FORWARD_SCHEMA, tags=(torch.Tag.nondeterministic_seeded,))
_lib.impl("attention_forward_graph", attention_forward, "CompositeExplicitAutograd")


def _forward_fake(query, key, value, attn_mask, dropout_p, is_causal, scale, c):
    B, H, Lq, _ = query.shape
    out = query.new_empty((B, H, Lq, value.shape[-1]))
    lse = query.new_empty((B, H, Lq), dtype=reference.accumulation_dtype(query.dtype))
    return out, lse, query.new_empty((2,), dtype=torch.int64)


torch.library.register_fake("sus::attention_forward", _forward_fake, lib=_lib)
torch.library.register_fake("sus::attention_forward_graph", _forward_fake, lib=_lib)


# ----------------------------------------------------------------------------------------------
# Backward

def _backward_impl(grad_out, query, key, value, attn_mask, out, lse, seed, dropout_p, is_causal, scale, c,
                   mask_grad, seed_offset):
    from .kernels import dispatch
    res = None
    if not mask_grad:
        # The kernels read seed[1] on the device and add the offset there: no device->host sync.
        res = dispatch.backward(grad_out, query, key, value, attn_mask, out, lse, seed, dropout_p, is_causal,
                                scale, c, (seed, 1, seed_offset))
    if res is None:
        sample_seed = (int(seed[1]) + seed_offset) % _SEED_HIGH
        dq, dk, dv, dmask = reference.backward(
            grad_out, query, key, value, out, lse, attn_mask, is_causal, scale, c, sample_seed,
            dropout_p, int(seed[0]), mask_grad=mask_grad)
    else:
        (dq, dk, dv), dmask = res, None
    if dmask is None:
        dmask = query.new_empty((0,))
    return dq.contiguous(), dk.contiguous(), dv.contiguous(), dmask


_lib.define(
    "attention_backward(Tensor grad_out, Tensor query, Tensor key, Tensor value, Tensor? attn_mask, Tensor out, "
    "Tensor lse, Tensor seed, float dropout_p, bool is_causal, float scale, float c, bool mask_grad, "
    "int seed_offset=0) -> (Tensor, Tensor, Tensor, Tensor)",
    tags=(torch.Tag.nondeterministic_seeded,))


def attention_backward(grad_out: Tensor, query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor],
                       out: Tensor, lse: Tensor, seed: Tensor, dropout_p: float, is_causal: bool, scale: float,
                       c: float, mask_grad: bool, seed_offset: int = 0) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """sus::attention_backward: the SUS backward -> (dq, dk, dv, dmask); dmask is empty unless
    mask_grad. The sampling seed is seed[1] + seed_offset (seed[1] already holds the rank's offset)."""
    return _backward_impl(grad_out, query, key, value, attn_mask, out, lse, seed, dropout_p, is_causal, scale, c,
                          mask_grad, seed_offset)


_lib.impl("attention_backward", attention_backward, "CompositeExplicitAutograd")


@torch.library.register_fake("sus::attention_backward", lib=_lib)
def _(grad_out, query, key, value, attn_mask, out, lse, seed, dropout_p, is_causal, scale, c, mask_grad,
      seed_offset=0):
    dmask = attn_mask.new_empty(attn_mask.shape) if (mask_grad and attn_mask is not None) else query.new_empty((0,))
    return (query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape), dmask)


def _setup_context(ctx, inputs, output):
    query, key, value, attn_mask, dropout_p, is_causal, scale, c = inputs
    out, lse, seed = output
    ctx.save_for_backward(query, key, value, attn_mask, out, lse, seed)
    ctx.args = (dropout_p, is_causal, scale, c)
    ctx.mask_grad = attn_mask is not None and attn_mask.requires_grad
    ctx.backward_calls = 0


def _triton_op_takes(query, key, value, attn_mask, dropout_p, mask_grad) -> bool:
    """Whether the backward goes through sus::attention_backward_triton, which torch.compile traces
    into its Triton kernels (CUDA), rather than the opaque sus::attention_backward. Decided when the
    backward is traced, so only on things a compiled graph is specialized on anyway; deterministic
    mode and stats recording need host-side work and keep the opaque op (sus_fx.backend compiles a
    second variant for calls made inside sus_fx.stats())."""
    from .kernels import dispatch
    from .stats import recording
    if query.device.type != "cuda":
        return False  # CI's interpreted kernels cannot be traced (torch's wrap_triton passes them through)
    if mask_grad or torch.are_deterministic_algorithms_enabled() or recording():
        return False
    if not dispatch.kernels_take_backward(query, key, value, attn_mask, dropout_p):
        return False
    if _TRACED_LAUNCH_NEEDS_STATIC_SHAPES and _has_symbolic_shape(query, key, value):
        return False
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        # the kernels read a bool mask through a uint8 view, which Inductor cannot lower ("torch.bool
        # is not supported by torch.iinfo", H200, torch 2.11): bool masks keep the opaque op
        return False
    from .kernels import triton_op  # noqa: F401  (registers the op; imports triton)
    return True


# torch < 2.13: Inductor's decomposition of a traced Triton launch can fail an internal assertion
# under dynamic shapes (pytorch/pytorch#181735, fixed by #183334; seen on the H200 with 2.11), so
# graphs with symbolic sizes keep the opaque op there: same kernels, launched from Python.
_TRACED_LAUNCH_NEEDS_STATIC_SHAPES = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) < (2, 13)


def _has_symbolic_shape(*tensors) -> bool:
    return any(isinstance(s, torch.SymInt) for t in tensors for s in t.shape)


def _backward(ctx, grad_out, grad_lse, grad_seed):
    query, key, value, attn_mask, out, lse, seed = ctx.saved_tensors
    dropout_p, is_causal, scale, c = ctx.args
    offset = sample_seed_offset(ctx.backward_calls)
    ctx.backward_calls += 1
    grad_out = grad_out.contiguous()
    if _triton_op_takes(query, key, value, attn_mask, dropout_p, ctx.mask_grad):
        dq, dk, dv = torch.ops.sus.attention_backward_triton(
            grad_out, query, key, value, attn_mask, out, lse, seed, is_causal, scale, c, offset)
        return dq, dk, dv, None, None, None, None, None
    dq, dk, dv, dmask = torch.ops.sus.attention_backward(
        grad_out, query, key, value, attn_mask, out, lse, seed, dropout_p, is_causal, scale, c,
        ctx.mask_grad, offset)
    return dq, dk, dv, (dmask if ctx.mask_grad else None), None, None, None, None


torch.library.register_autograd("sus::attention_forward", _backward, setup_context=_setup_context, lib=_lib)


# ----------------------------------------------------------------------------------------------
# Eager calls: the same forward and backward without the custom-op layers

class _EagerAttention(torch.autograd.Function):
    """What attention_forward + its registered autograd do, for plain eager calls. The custom ops
    exist for tracing (fake tensors, AOTAutograd, Inductor); in eager their Python wrappers cost
    ~1 ms per forward+backward (notes/KERNELS.md, host cost), more than the GPU work at n = 2k."""

    @staticmethod
    def forward(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, c):
        out, lse, seed = _forward_impl(query, key, value, attn_mask, dropout_p, is_causal, scale)
        ctx.save_for_backward(query, key, value, attn_mask, out, lse, seed)
        ctx.args = (dropout_p, is_causal, scale, c)
        ctx.mask_grad = attn_mask is not None and attn_mask.requires_grad
        ctx.backward_calls = 0
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        query, key, value, attn_mask, out, lse, seed = ctx.saved_tensors
        dropout_p, is_causal, scale, c = ctx.args
        offset = sample_seed_offset(ctx.backward_calls)
        ctx.backward_calls += 1
        dq, dk, dv, dmask = _backward_impl(grad_out.contiguous(), query, key, value, attn_mask, out, lse, seed,
                                           dropout_p, is_causal, scale, c, ctx.mask_grad, offset)
        return dq, dk, dv, (dmask if ctx.mask_grad else None), None, None, None, None


_PLAIN = (Tensor, torch.nn.Parameter)


def _plain_eager(*tensors) -> bool:
    """True for an ordinary eager call: no tracing, no dispatch mode, no functorch transform, no
    tensor subclass. Anything else takes the registered ops, which know how to be traced."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False
    if torch._C._are_functorch_transforms_active():
        return False
    return all(t is None or type(t) in _PLAIN for t in tensors)


# ----------------------------------------------------------------------------------------------
# The public op

def _attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
               enable_gqa: bool = False, *, c: float = 32.0) -> Tensor:
    check_inputs(query, key, value, attn_mask, dropout_p, scale, enable_gqa, c)
    three_d = query.dim() == 3
    if three_d:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask.unsqueeze(1)
    if scale is None:
        scale = query.shape[-1] ** -0.5  # a SymFloat under dynamic shapes: no specialization on E
    device_type = query.device.type
    if torch.is_autocast_enabled(device_type) and query.dtype in (torch.float32, torch.float64):
        # Under autocast SDPA runs in the autocast dtype; so do we (the op has no autocast kernel).
        low = torch.get_autocast_dtype(device_type)
        query, key, value = query.to(low), key.to(low), value.to(low)
    if not isinstance(dropout_p, torch.SymFloat):
        dropout_p = float(dropout_p)
    if _plain_eager(query, key, value, attn_mask):
        out = _EagerAttention.apply(query, key, value, attn_mask, dropout_p, bool(is_causal), scale, float(c))
    else:
        out, _, _ = torch.ops.sus.attention_forward(query, key, value, attn_mask, dropout_p, bool(is_causal),
                                                    scale, float(c))
    return out.squeeze(1) if three_d else out


_lib.impl("attention", _attention, "CompositeImplicitAutograd")


def sus_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Optional[Tensor] = None,
                  dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                  enable_gqa: bool = False, *, c: float = 32.0) -> Tensor:
    """Attention with an exact forward and the SUS backward.

    Arguments mean what they mean for torch.nn.functional.scaled_dot_product_attention.
    `c` is the SUS parameter: each attention weight W_ij is kept in the backward with probability
    min(1, c W_ij) and reweighted so gradients stay unbiased; `float("inf")` gives the exact backward.
    """
    return torch.ops.sus.attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, c=c)
