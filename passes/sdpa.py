"""F.scaled_dot_product_attention calls -> torch.ops.sus.attention (same arguments plus c).

Every SDPA option maps one to one: attn_mask (bool or float, any shape broadcasting to
[B, H, Lq, Lk]), dropout_p (a number or a symbolic float), is_causal, scale (None = 1/sqrt(E), a
number or a symbolic float), enable_gqa. k/v repeated per head (HF's repeat_kv, repeat_interleave)
are folded into enable_gqa (gqa.py).

Left alone (Skip): inputs not 3-D/4-D, batch or head counts that SDPA would broadcast but the op
does not take, attn_mask together with is_causal (eager raises), non-constant is_causal/enable_gqa,
masks of other dtypes or shapes.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.fx import Node

from . import gqa
from .matcher import (NoMatch, arg, broadcasts_to, describe, is_function, module_path, require_tensor, scalar_of,
                      size_eq)
from .plan import AttentionPlan, Ref

SDPA_FUNCTIONS = {F.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention}


def is_anchor(node: Node) -> bool:
    return is_function(node, *SDPA_FUNCTIONS)


def what(node: Node) -> str:
    return f"F.scaled_dot_product_attention ({node.name})"


def match(node: Node) -> Optional[AttentionPlan]:
    q, k, v = arg(node, 0, "query"), arg(node, 1, "key"), arg(node, 2, "value")
    mask = arg(node, 3, "attn_mask")
    dropout_p = arg(node, 4, "dropout_p", 0.0)
    is_causal = arg(node, 5, "is_causal", False)
    scale = arg(node, 6, "scale")
    enable_gqa = arg(node, 7, "enable_gqa", False)

    tq, tk, tv = (require_tensor(x, name) for x, name in ((q, "query"), (k, "key"), (v, "value")))
    out = require_tensor(node, "SDPA output")
    nd = tq.dim()
    if not (tq.dim() == tk.dim() == tv.dim()) or nd not in (3, 4):
        raise NoMatch(f"SDPA on {tq.dim()}-D/{tk.dim()}-D/{tv.dim()}-D inputs (the op takes 3-D or 4-D)")
    if not (tq.dtype == tk.dtype == tv.dtype) or not tq.is_floating_point():
        raise NoMatch(f"SDPA with dtypes {tq.dtype}/{tk.dtype}/{tv.dtype}")
    if not (size_eq(tq.shape[0], tk.shape[0]) and size_eq(tk.shape[0], tv.shape[0])):
        raise NoMatch("SDPA broadcasting over the batch dim (the op needs equal batch sizes)")
    if not isinstance(is_causal, bool):
        raise NoMatch(f"is_causal is not a constant ({describe(is_causal)})")
    if not isinstance(enable_gqa, bool):
        raise NoMatch(f"enable_gqa is not a constant ({describe(enable_gqa)})")

    # dropout and scale: numbers or symbolic scalars only
    if isinstance(dropout_p, Node):
        if scalar_of(dropout_p) is not dropout_p:
            raise NoMatch(f"dropout_p is a tensor ({describe(dropout_p)})")
    elif not isinstance(dropout_p, (int, float)) or not (0.0 <= float(dropout_p) < 1.0):
        raise NoMatch(f"dropout_p={dropout_p!r}")
    if scale is not None:
        s = scalar_of(scale)
        if s is None or (isinstance(s, Node) and s is not scale):
            raise NoMatch(f"scale is not a number ({describe(scale)})")
        scale_factors = [("mul", s)]
    else:
        scale_factors = None

    # GQA: fold repeated k/v into enable_gqa
    dead = []
    group = 1
    if nd == 4:
        folded = gqa.fold(k, v)
        if folded is not None:
            k, v, group = folded
            dead += gqa.repeat_nodes(node.args[1] if len(node.args) > 1 else node.kwargs["key"])
            dead += gqa.repeat_nodes(node.args[2] if len(node.args) > 2 else node.kwargs["value"])
            tk, tv = require_tensor(k, "key"), require_tensor(v, "value")
        H, Hk, Hv = tq.shape[1], tk.shape[1], tv.shape[1]
        if not size_eq(Hk, Hv):
            raise NoMatch(f"key has {Hk} heads and value {Hv}")
        if enable_gqa or group > 1:
            if not isinstance(H, int) or not isinstance(Hk, int) or Hk == 0 or H % Hk:
                raise NoMatch(f"query heads {H} not a known multiple of kv heads {Hk}")
            group = H // Hk
        elif not size_eq(H, Hk):
            raise NoMatch(f"query has {H} heads, key/value {Hk} (SDPA would broadcast; the op does not)")

    mask_kind = "none"
    if mask is not None:
        tm = require_tensor(mask, "attn_mask")
        if is_causal:
            raise NoMatch("attn_mask together with is_causal=True (eager SDPA raises)")
        if tm.dtype != torch.bool and tm.dtype != tq.dtype:
            raise NoMatch(f"attn_mask dtype {tm.dtype} with query dtype {tq.dtype}")
        target = tuple(tq.shape[:-1]) + (tk.shape[-2],)
        if not broadcasts_to(tm.shape, target):
            raise NoMatch(f"attn_mask of shape {list(tm.shape)} does not broadcast to {list(target)}")
        mask_kind = "bool" if tm.dtype == torch.bool else "float"

    return AttentionPlan(
        form="F.scaled_dot_product_attention" + (" + repeat_kv->enable_gqa" if dead else ""),
        path=module_path([node]), anchor=node, output=node,
        q=Ref(q, shape=tuple(tq.shape)), k=Ref(k, shape=tuple(tk.shape)), v=Ref(v, shape=tuple(tv.shape)),
        mask_node=mask, mask_kind=mask_kind, dropout_p=dropout_p if isinstance(dropout_p, Node) else float(dropout_p),
        is_causal=is_causal, scale=scale_factors, gqa=group, dead=dead,
        op_dtype=tq.dtype, out_dtype=out.dtype)
