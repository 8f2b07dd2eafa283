"""One planned rewrite: the matched attention, as arguments of torch.ops.sus.attention.

Matchers (sdpa.py, matmul_softmax.py) only read the graph and return an AttentionPlan;
AttentionPlan.apply() is the only place that mutates it. `apply` inserts the new nodes right before
the node being replaced (every input of the plan is an ancestor of it, so that point is valid),
redirects its users, then erases the matched nodes that became dead.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch.fx import Graph, Node

from . import masks
from .matcher import dtype_of, plain_shape, tensor_of

Scalar = Union[float, Node]


@dataclass
class Ref:
    """A tensor to pass to the op: `node` with views/casts applied in order.
    ops: ("transpose", d0, d1) | ("permute", dims) | ("to", dtype)."""
    node: Node
    ops: List[tuple] = field(default_factory=list)
    shape: Optional[tuple] = None      # shape after ops (for reports and checks)

    def emit(self, graph: Graph) -> Node:
        out = self.node
        for op in self.ops:
            if op[0] == "transpose":
                out = graph.call_method("transpose", (out, op[1], op[2]))
            elif op[0] == "permute":
                out = graph.call_method("permute", (out, *op[1]))
            elif op[0] == "to":
                out = graph.call_method("to", (out, op[1]))
            else:  # pragma: no cover
                raise AssertionError(op)
        return out


@dataclass
class AttentionPlan:
    form: str
    path: str
    anchor: Node                       # softmax / SDPA node (module attribution)
    output: Node                       # node whose value the op replaces
    q: Ref
    k: Ref
    v: Ref
    mask_terms: List[masks.MaskTerm] = field(default_factory=list)
    mask_node: Optional[Node] = None    # a ready attn_mask (SDPA); excludes mask_terms
    mask_kind: str = "none"
    dropout_p: Scalar = 0.0
    is_causal: bool = False
    scale: Optional[List[Tuple[str, Scalar]]] = None  # None: SDPA default 1/sqrt(E); []: 1.0
    gqa: int = 1
    compute_dtype: Optional[torch.dtype] = None   # cast q/k/v to this when they differ from it
    out_dtype: Optional[torch.dtype] = None       # cast the op's result to this when it differs
    op_dtype: Optional[torch.dtype] = None        # dtype the op returns (q's after casts)
    out_perm: Optional[Sequence[int]] = None      # permute the op's result (einsum layouts)
    dead: List[Node] = field(default_factory=list)

    # -- report -----------------------------------------------------------------------------
    @property
    def dropout_report(self) -> Union[float, str]:
        if isinstance(self.dropout_p, Node):
            return f"symbolic ({self.dropout_p.name})"
        return float(self.dropout_p)

    def shapes(self):
        return plain_shape(self.q.shape), plain_shape(self.k.shape), plain_shape(self.v.shape)

    @property
    def device_type(self) -> Optional[str]:
        """The device type of the keys ("cuda", "cpu"), or None if the graph does not say."""
        k = tensor_of(self.k.node)
        return k.device.type if k is not None else None

    # -- emission ---------------------------------------------------------------------------
    def _scale_arg(self, graph: Graph) -> Optional[Scalar]:
        if self.scale is None:
            return None
        number = 1.0
        syms: List[Tuple[str, Node]] = []
        for op, val in self.scale:
            if isinstance(val, Node):
                syms.append((op, val))
            elif op == "mul":
                number *= val
            else:
                number /= val
        if not syms:
            return number
        out: Scalar = number
        for op, val in syms:
            out = graph.call_function(operator.mul if op == "mul" else operator.truediv, (out, val))
        return out

    def apply(self, graph: Graph, c: float) -> Node:
        """Insert the op before `output`, redirect output's users to it, erase what died."""
        existing = set(graph.nodes)
        with graph.inserting_before(self.output):
            q, k, v = self.q.emit(graph), self.k.emit(graph), self.v.emit(graph)
            if self.compute_dtype is not None:
                q, k, v = (x if _ref_dtype(r) == self.compute_dtype else graph.call_method("to", (x, self.compute_dtype))
                           for x, r in ((q, self.q), (k, self.k), (v, self.v)))
            mask = self.mask_node if self.mask_node is not None else masks.build_mask(graph, self.mask_terms)
            scale = self._scale_arg(graph)
            op_node = graph.call_function(
                torch.ops.sus.attention.default,
                (q, k, v, mask, self.dropout_p, bool(self.is_causal), scale, self.gqa > 1),
                {"c": float(c)})
            out = op_node
            if self.out_perm is not None:
                out = graph.call_method("permute", (out, *self.out_perm))
            if self.out_dtype is not None and self.op_dtype is not None and self.out_dtype != self.op_dtype:
                out = graph.call_method("to", (out, self.out_dtype))
        # New nodes sit contiguously right before `output`: give them the site's module stack.
        stack = self.anchor.meta.get("nn_module_stack")
        n = out
        while n not in existing and n.op != "root":
            if stack is not None:
                n.meta["nn_module_stack"] = dict(stack)
            n.meta["sus_attention_site"] = self.path
            n = n.prev
        for key in ("example_value", "val", "stack_trace", "source_fn_stack"):
            if key in self.output.meta:
                out.meta[key] = self.output.meta[key]
        self.output.replace_all_uses_with(out)
        erase_dead(graph, [self.output] + list(self.dead))
        return out


def _ref_dtype(ref: Ref) -> Optional[torch.dtype]:
    dt = dtype_of(ref.node)
    for op in ref.ops:
        if op[0] == "to":
            dt = op[1]
    return dt


def erase_dead(graph: Graph, nodes: List[Node]) -> None:
    """Erase the given (matched, pure) nodes that no longer have users, users before producers."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    todo = sorted({n for n in nodes if n in order}, key=lambda n: -order[n])
    changed = True
    erased = set()
    while changed:
        changed = False
        for n in todo:
            if n not in erased and not n.users and n.op in ("call_function", "call_method"):
                graph.erase_node(n)
                erased.add(n)
                changed = True
