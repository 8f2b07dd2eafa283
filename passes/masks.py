"""Masks applied to attention scores before the softmax, and how they become SDPA's attn_mask.

Recognized steps (x is the scores tensor, in the order they appear between the product and the softmax):

    x + m, m + x, x += m, torch.add(x, m)        additive float mask m (any float tensor, may require
                                                grad: the op then returns a mask gradient)
    x.masked_fill(b, v), torch.masked_fill       b a bool tensor, True = masked, v a masking value
    torch.where(b, x, v), x.where(b, v)          b True = kept
    torch.where(b, v, x)                         b True = masked
    baddbmm(m, q, kT, beta=beta)                 additive beta * m (see matmul_softmax)

A masking value v is -inf or a finite number <= FILL_MAX (finfo.min, -1e9, -1e4, ...), given as a
number or as a constant 0-d tensor (torch.full([], v)).

Turning them into one attn_mask (build_mask):

  * only -inf fills   -> a bool "keep" mask (logical_not / logical_and of the conditions). Exact,
                         except a row with every entry masked: eager's softmax gives NaN there, SDPA-style
                         kernels give 0 or NaN. Eager's result on such a row is NaN anyway.
  * a single additive mask -> that tensor, unchanged (exactly SDPA's additive semantics).
  * anything else     -> one additive float mask: the additive tensors summed, and each fill turned into
                         zeros_like(b, dtype).masked_fill(masked, v) with the same value v, in the dtype the
                         scores had at that step (the dtype eager's masked_fill/where rounded v to).
    Exactness of fill -> additive: eager sets a masked score to v, the op computes s + v.
      - a row with at least one unmasked entry: masked weights are exp(v - rowmax) vs exp(s + v - rowmax);
        with v <= FILL_MAX both underflow to exactly 0 for any realistic scores (|s| < ~9e3), so the rows agree.
      - a fully masked row: eager gives a uniform row (every score equals v). The op gives softmax(s + v),
        which is the same uniform row whenever s + v rounds to v, i.e. v "absorbs" the scores: true for
        finfo(float32/bfloat16).min and any |s| < 1e31. With a small fill like -1e4 or -1e9, fully masked
        rows differ from eager (they are garbage rows in every model we know: padding queries).
      - combined masks add in a different order than eager; identical results except rounding, and
        finfo.min + finfo.min overflows to -inf in both.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch.fx import Graph, Node

from .matcher import (NoMatch, arg, broadcasts_to, constant_tensor_value, describe, dtype_of, is_function,
                      is_method, shape_of, tensor_of)

FILL_MAX = -1.0e4
"""A masked_fill/where value counts as masking only if it is -inf or at most this."""

ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add, torch.Tensor.add)


@dataclass
class MaskTerm:
    kind: str                 # "add" (additive tensor) or "fill" (bool condition + value)
    node: Node                # the additive tensor, or the bool condition
    masked_where: bool = True  # fill: True -> entries where node is True are masked
    value: float = -math.inf   # fill value
    dtype: Optional[torch.dtype] = None  # dtype of the scores at this step (for building additive masks)
    scale: float = 1.0        # additive: multiply the tensor by this (baddbmm's beta)
    origin: str = ""

    @property
    def neg_inf(self) -> bool:
        return self.kind == "fill" and self.value == -math.inf


def _fill_value(v) -> Optional[float]:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, Node):
        return constant_tensor_value(v)
    return None


def _check_fill(value: Optional[float], node: Node) -> float:
    if value is None:
        raise NoMatch(f"mask fill value of {describe(node)} is not a constant number")
    if math.isnan(value) or not (value == -math.inf or value <= FILL_MAX):
        raise NoMatch(f"{describe(node)} fills {value!r}, not a masking value (-inf or <= {FILL_MAX:g})")
    return value


def _check_bool(cond, node: Node) -> Node:
    if not isinstance(cond, Node) or dtype_of(cond) != torch.bool:
        raise NoMatch(f"mask condition of {describe(node)} is not a bool tensor")
    return cond


def alternatives(node: Node) -> List[Tuple[Node, MaskTerm]]:
    """Ways to read `node` as (scores operand, mask term); [] if `node` is not a mask step.
    An add gives two alternatives (either operand may be the scores); the caller tries both."""
    out: List[Tuple[Node, MaskTerm]] = []
    dt = dtype_of(node)
    if (is_function(node, *ADD_FUNCTIONS) or is_method(node, "add", "add_")) and len(node.args) >= 2:
        alpha = node.kwargs.get("alpha", 1)
        if alpha != 1 or len(node.args) > 2:
            return []
        a, b = node.args[0], node.args[1]
        # x += m mutates x: only the scores may be the mutated operand (a mask buffer must stay mutated)
        pairs = ((a, b),) if node.target in (operator.iadd, "add_") else ((a, b), (b, a))
        for x, m in pairs:
            if isinstance(x, Node) and isinstance(m, Node) and tensor_of(m) is not None:
                out.append((x, MaskTerm("add", m, dtype=dt, origin="additive mask")))
        return out
    if (is_method(node, "masked_fill", "masked_fill_") or is_function(node, torch.masked_fill, torch.Tensor.masked_fill)):
        x, cond, v = node.args[0], arg(node, 1, "mask"), arg(node, 2, "value")
        cond = _check_bool(cond, node)
        value = _check_fill(_fill_value(v), node)
        return [(x, MaskTerm("fill", cond, True, value, dt, origin="masked_fill"))]
    if is_function(node, torch.where) and len(node.args) == 3:
        cond, a, b = node.args
        cond = _check_bool(cond, node)
        if isinstance(a, Node) and tensor_of(a) is not None and tensor_of(a).dim() > 0 and _fill_value(b) is not None:
            return [(a, MaskTerm("fill", cond, False, _check_fill(_fill_value(b), node), dt, origin="where"))]
        if isinstance(b, Node) and tensor_of(b) is not None and tensor_of(b).dim() > 0 and _fill_value(a) is not None:
            return [(b, MaskTerm("fill", cond, True, _check_fill(_fill_value(a), node), dt, origin="where"))]
        raise NoMatch(f"{describe(node)} selects between two tensors, not scores and a masking value")
    if is_method(node, "where") and len(node.args) == 3:
        x, cond, v = node.args
        cond = _check_bool(cond, node)
        return [(x, MaskTerm("fill", cond, False, _check_fill(_fill_value(v), node), dt, origin="where"))]
    return []


def check_term(term: MaskTerm, scores_shape) -> None:
    """The mask must broadcast to the scores without enlarging them; additive masks must be float."""
    s = shape_of(term.node)
    if s is None:
        raise NoMatch(f"no shape for mask {describe(term.node)}")
    if not broadcasts_to(s, scores_shape):
        raise NoMatch(f"mask {describe(term.node)} of shape {list(s)} does not broadcast to the scores' "
                      f"shape {list(scores_shape)}")
    if term.kind == "add":
        t = tensor_of(term.node)
        if not t.is_floating_point():
            raise NoMatch(f"additive mask {describe(term.node)} has dtype {t.dtype}, not floating point")


def kind_of(terms: List[MaskTerm]) -> str:
    if not terms:
        return "none"
    if all(t.neg_inf for t in terms):
        return "bool"
    return "float"


def build_mask(graph: Graph, terms: List[MaskTerm]) -> Optional[Node]:
    """Emit nodes (at the graph's current insert point) computing one attn_mask for `terms`."""
    if not terms:
        return None
    if all(t.neg_inf for t in terms):
        keep = None
        for t in terms:
            k = graph.call_function(torch.logical_not, (t.node,)) if t.masked_where else t.node
            keep = k if keep is None else graph.call_function(torch.logical_and, (keep, k))
        return keep
    if len(terms) == 1 and terms[0].kind == "add" and terms[0].scale == 1.0:
        return terms[0].node
    total = None
    for t in terms:
        if t.kind == "add":
            m = t.node if t.scale == 1.0 else graph.call_function(operator.mul, (t.node, t.scale))
        else:
            masked = t.node if t.masked_where else graph.call_function(torch.logical_not, (t.node,))
            zeros = graph.call_function(torch.zeros_like, (t.node,), {"dtype": t.dtype})
            m = graph.call_method("masked_fill", (zeros, masked, t.value))
        total = m if total is None else graph.call_function(operator.add, (total, m))
    return total
