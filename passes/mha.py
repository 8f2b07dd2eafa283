"""nn.MultiheadAttention (and nn.Transformer* layers built on it).

Dynamo keeps `F.multi_head_attention_forward` as one opaque call in the graph (it is on Dynamo's
in-graph function list), so there is no softmax or SDPA node to match. We replace that call by
`sus_multi_head_attention_forward`, which runs torch's own multi_head_attention_forward code with
one change: its `scaled_dot_product_attention` resolves to torch.ops.sus.attention with the site's c.

That code only calls SDPA when need_weights=False. When the graph asked for the weights
(need_weights=True, the nn.MultiheadAttention default) but never uses them (output [1] unused), we
call it with need_weights=False and is_causal=False. Forcing is_causal=False keeps eager's
need_weights=True semantics exactly: that path ignores the is_causal hint and applies attn_mask as
given. When the weights are used, the call is left alone.
"""
from __future__ import annotations

import inspect
import operator
import types
from typing import Optional

import torch
import torch.nn.functional as F
from torch.fx import Node

from .matcher import NoMatch, describe, is_function, module_path, plain_shape, tensor_of

_SIG = inspect.signature(F.multi_head_attention_forward)


def is_anchor(node: Node) -> bool:
    return is_function(node, F.multi_head_attention_forward)


def what(node: Node) -> str:
    return f"F.multi_head_attention_forward ({node.name})"


def _sus_variant(c: float):
    fn = F.multi_head_attention_forward

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        return torch.ops.sus.attention.default(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                               enable_gqa, c=c)

    glb = dict(fn.__globals__)
    glb["scaled_dot_product_attention"] = sdpa
    return types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__, fn.__closure__)


def sus_multi_head_attention_forward(*args, sus_c: float, **kwargs):
    """F.multi_head_attention_forward with the SUS op in place of SDPA (weights are not returned)."""
    bound = _SIG.bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    if a["need_weights"]:
        a["need_weights"] = False
        a["is_causal"] = False
    fn = _sus_variant(sus_c)
    out, _ = fn(**a)
    return out, None


class MhaPlan:
    """Retargets the call node in place (no new subgraph)."""

    def __init__(self, node: Node, bound: inspect.BoundArguments):
        self.node = node
        self.anchor = node
        a = bound.arguments
        self.path = module_path([node])
        q, k = tensor_of(a["query"]), tensor_of(a["key"])
        E, H = a["embed_dim_to_check"], a["num_heads"]
        hd = E // H if isinstance(E, int) and isinstance(H, int) and H else None
        self.q_shape = self.k_shape = self.v_shape = None
        self.device_type = k.device.type if k is not None else None
        if q is not None and k is not None and q.dim() == 3 and hd is not None:
            L, B = q.shape[0], q.shape[1]
            S = k.shape[0]
            self.q_shape = plain_shape((B, H, L, hd))
            self.k_shape = self.v_shape = plain_shape((B, H, S, hd))
        kinds = []
        for name in ("attn_mask", "key_padding_mask"):
            m = a.get(name)
            if m is not None:
                t = tensor_of(m)
                kinds.append(f"{name}:{'bool' if t is not None and t.dtype == torch.bool else 'float'}")
        self.mask_kind = "float" if kinds else "none"
        self.mask_detail = ",".join(kinds)
        self.is_causal = bool(a.get("is_causal")) and not a.get("need_weights") and a.get("key_padding_mask") is None
        p, training = a["dropout_p"], a["training"]
        self.dropout = (float(p) if training else 0.0) if isinstance(p, (int, float)) else str(p)
        self.gqa = 1
        self.form = "F.multi_head_attention_forward (nn.MultiheadAttention)" + (
            f" [{self.mask_detail}]" if self.mask_detail else "")

    def shapes(self):
        return self.q_shape, self.k_shape, self.v_shape

    @property
    def dropout_report(self):
        return self.dropout

    def apply(self, graph, c: float) -> Node:
        self.node.target = sus_multi_head_attention_forward
        self.node.kwargs = {**self.node.kwargs, "sus_c": float(c)}
        return self.node


def match(node: Node) -> Optional[MhaPlan]:
    try:
        bound = _SIG.bind(*node.args, **node.kwargs)
    except TypeError as e:
        raise NoMatch(f"cannot bind multi_head_attention_forward arguments: {e}")
    bound.apply_defaults()
    a = bound.arguments
    for name in ("need_weights", "training", "is_causal", "use_separate_proj_weight", "add_zero_attn"):
        if not isinstance(a[name], bool):
            raise NoMatch(f"{name} is not a constant ({describe(a[name])})")
    if isinstance(a["dropout_p"], Node) or isinstance(a["dropout_p"], bool) or not isinstance(a["dropout_p"], (int, float)):
        raise NoMatch(f"dropout_p is not a number ({describe(a['dropout_p'])})")
    if a["need_weights"]:
        for u in node.users:
            if not (is_function(u, operator.getitem) and u.args[1] in (0, 1)):
                raise NoMatch(f"the (out, weights) result is used as a whole by {describe(u)}")
            if u.args[1] == 1 and u.users:
                raise NoMatch("attention weights are returned (need_weights=True) and used")
    return MhaPlan(node, bound)
