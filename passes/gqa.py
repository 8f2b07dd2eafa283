"""Grouped-query attention: k and v repeated per query head, folded into enable_gqa.

Recognized repeats of a 4-D [B, Hk, L, D] tensor x into [B, Hk*G, L, D] where query head h reads
kv head h // G (exactly SDPA's enable_gqa):

    repeat_kv (HF):  x[:, :, None, :, :].expand(B, Hk, G, L, D).reshape(B, Hk*G, L, D)
                     (the unsqueeze may be x.unsqueeze(2), x[:, :, None] or a view/reshape to
                     [B, Hk, 1, L, D]; the final reshape may be a view)
    x.repeat_interleave(G, dim=1) / torch.repeat_interleave(x, G, dim=1)

x.repeat(1, G, 1, 1) is a different mapping (h % Hk) and is not folded. Folding is done only when
k and v are both repeated by the same G; otherwise the repeated tensors are passed as they are
(still correct, just materialized).
"""
from __future__ import annotations

import operator
from typing import Optional, Tuple

import torch
from torch.fx import Node

from .matcher import arg, is_function, is_method, shape_of, size_eq


def _unsqueezed_at_2(node: Node) -> Optional[Node]:
    """x such that node == x.unsqueeze(2), for a 4-D x."""
    if not isinstance(node, Node) or not node.args or not isinstance(node.args[0], Node):
        return None
    x = node.args[0]
    xs, ns = shape_of(x), shape_of(node)
    if xs is None or ns is None or len(xs) != 4 or len(ns) != 5:
        return None
    if is_method(node, "unsqueeze") or is_function(node, torch.unsqueeze):
        dim = arg(node, 1, "dim")
        return x if isinstance(dim, int) and dim % 5 == 2 else None
    if is_function(node, operator.getitem):
        idx = node.args[1]
        if not isinstance(idx, tuple):
            return None
        full = slice(None, None, None)
        items = list(idx)
        if items and items[-1] is Ellipsis:
            items = items[:-1]
        if items[:3] == [full, full, None] and all(i == full for i in items[3:]) and len(items) <= 5:
            return x
        return None
    if is_method(node, "view", "reshape") or is_function(node, torch.reshape):
        # Any view to x's shape with a 1 inserted at dim 2 keeps element order: same as unsqueeze(2).
        want = tuple(xs[:2]) + (1,) + tuple(xs[2:])
        if all(size_eq(a, b) for a, b in zip(ns, want)):
            return x
    return None


def unrepeat(node: Node) -> Optional[Tuple[Node, int]]:
    """(x, G) if `node` is x repeated G times per head as described above, else None."""
    if not isinstance(node, Node):
        return None
    out = shape_of(node)
    if out is None or len(out) != 4:
        return None
    if is_method(node, "repeat_interleave") or is_function(node, torch.repeat_interleave):
        x = node.args[0]
        reps, dim = arg(node, 1, "repeats"), arg(node, 2, "dim")
        xs = shape_of(x)
        if (isinstance(x, Node) and isinstance(reps, int) and reps >= 1 and isinstance(dim, int)
                and xs is not None and len(xs) == 4 and dim % 4 == 1):
            return x, reps
        return None
    if not (is_method(node, "reshape", "view") or is_function(node, torch.reshape)):
        return None
    ex = node.args[0]
    if not (isinstance(ex, Node) and (is_method(ex, "expand") or is_method(ex, "expand_as"))):
        return None
    es = shape_of(ex)
    u = ex.args[0]
    x = _unsqueezed_at_2(u) if isinstance(u, Node) else None
    if x is None or es is None or len(es) != 5:
        return None
    xs = shape_of(x)
    B, Hk, L, D = xs
    G = es[2]
    if not isinstance(G, int):
        return None
    if not (size_eq(es[0], B) and size_eq(es[1], Hk) and size_eq(es[3], L) and size_eq(es[4], D)):
        return None
    if not (size_eq(out[0], B) and size_eq(out[1], Hk * G) and size_eq(out[2], L) and size_eq(out[3], D)):
        return None
    return x, G


def fold(k: Node, v: Node) -> Optional[Tuple[Node, Node, int]]:
    """(k0, v0, G) when both k and v are per-head repeats of k0/v0 by the same G > 1."""
    rk, rv = unrepeat(k), unrepeat(v)
    if rk is None or rv is None or rk[1] != rv[1] or rk[1] <= 1:
        return None
    return rk[0], rv[0], rk[1]


def repeat_nodes(node: Node) -> list:
    """The nodes making up a repeat (for dead-code removal once the repeat is folded)."""
    out = [node]
    if is_method(node, "reshape", "view") or is_function(node, torch.reshape):
        ex = node.args[0]
        out.append(ex)
        out.append(ex.args[0])
    return out
