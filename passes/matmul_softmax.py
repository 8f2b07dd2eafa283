"""Explicit attention: softmax(scale * q k^T + mask) (dropout) @ v, anchored on the softmax.

From the softmax we walk backwards to the scores and forwards to the product with v:

    scores   matmul / @ / bmm / Tensor.matmul of q with kT (kT = k.transpose(-2, -1), .permute(..),
             .mT, or any tensor: k is then kT.transpose(-2, -1)), 4-D [B, H, n, d] or 3-D [B*H, n, d];
             baddbmm(input, q, kT, beta=, alpha=) (alpha is a scale, beta*input an additive mask, beta=0
             drops input); einsum with one contracted letter (operands/outputs in any layout: we
             permute into [batch..., n, d] and back)
    scale    x * s, s * x, x / s (operator, torch.mul/div, Tensor.mul/div) on the scores, and the same on
             q or on k / kT right before the product. s is a Python number, a SymInt/SymFloat (incl.
             `.item()` of a tensorified float), or a constant 0-d tensor (torch.full([], v)).
             A tensor factor is not a scale (it may need a gradient): left alone.
    masks    see masks.py (additive, masked_fill, where); a scale must come before them, except a
             positive number after -inf fills only (it commutes with them)
    in place s.mul_(c) / s.div_(c) / s.masked_fill_(m, v) / s.add_(m) / s += m on the scores before the
             softmax reads them (Dynamo leaves these as user-less nodes); never peeled off q or k
    casts    upcasts of the scores (.float(), .to(float32), softmax(dtype=float32)); any cast of the
             weights after the softmax (.to(q.dtype), .type(v.dtype), .type_as(v), .half(), ...)
    dropout  F.dropout(w, p, training) (nn.Dropout inlines to this), torch.dropout(w, p, train);
             training=False or p=0 -> dropout_p=0
    product  w @ v (matmul / bmm / einsum) with w as the left operand

Every intermediate node must have exactly one user (the next step, plus the in-place steps above):
if the scores or the weights are used anywhere else (returned weights, a head mask, weights
reused), the candidate is left alone. Also left alone: softmax over another dim or with a
downcasting dtype=, scores reshaped between the product and the softmax (old HF BART/OPT
`.view(B, H, n, n)` around the mask), 2-D or 5-D products, q/k/v batch dims that broadcast.

Dtypes: the op takes q/k/v in one dtype and returns it. When the graph mixes dtypes (bf16 q/k,
scores upcast, fp32 weights @ v.float()), q/k/v are cast to the widest of them and the result is
cast to the product's dtype, so every replaced output keeps its dtype and shape.
softmax(dtype=float32) followed by .to(q.dtype) is what the op does internally (fp32 softmax,
output in q.dtype).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.fx import Node

from . import gqa, masks
from .matcher import (SOFTMAX_FUNCTIONS, NoMatch, arg, cast_input, describe, dtype_of,
                      is_baddbmm, is_einsum, is_function, is_matmul, is_method, is_upcast_or_same, last_two_swapped,
                      module_path, require_only_user, require_tensor, scalar_of, shape_eq, shape_of, size_eq,
                      tensor_of, widest)
from .plan import AttentionPlan, Ref

MUL_FUNCTIONS = (operator.mul, operator.imul, torch.mul, torch.Tensor.mul)
DIV_FUNCTIONS = (operator.truediv, operator.itruediv, torch.div, torch.true_divide, torch.Tensor.div)


# ----------------------------------------------------------------------------------------------
# The anchor

def softmax_parts(node: Node) -> Optional[Tuple[Node, object, Optional[torch.dtype]]]:
    """(input, dim, dtype) of a softmax call, else None."""
    if is_function(node, F.softmax):
        return arg(node, 0, "input"), arg(node, 1, "dim"), arg(node, 3, "dtype")
    if is_function(node, *SOFTMAX_FUNCTIONS) or is_method(node, "softmax"):
        return arg(node, 0, "input"), arg(node, 1, "dim"), arg(node, 2, "dtype")
    return None


def is_anchor(node: Node) -> bool:
    return softmax_parts(node) is not None


def what(node: Node) -> str:
    return f"softmax ({node.name})"


# ----------------------------------------------------------------------------------------------
# Scalars on a tensor: x * s, s * x, x / s

def scale_step(node: Node) -> Optional[Tuple[Node, Tuple[str, object]]]:
    """(tensor operand, ("mul"|"div", scalar)) if node multiplies/divides a tensor by a scalar.
    Raises NoMatch for a product with a tensor that is not a scalar."""
    is_mul = is_function(node, *MUL_FUNCTIONS) or is_method(node, "mul", "multiply", "mul_")
    is_div = is_function(node, *DIV_FUNCTIONS) or is_method(node, "div", "divide", "true_divide", "div_")
    if not (is_mul or is_div) or len(node.args) != 2:
        return None
    if is_div and node.kwargs.get("rounding_mode") is not None:
        return None
    a, b = node.args
    ta = tensor_of(a) if isinstance(a, Node) else None
    tb = tensor_of(b) if isinstance(b, Node) else None
    if is_div:
        if ta is None or ta.dim() == 0:
            return None
        s = scalar_of(b)
        if s is None:
            raise NoMatch(f"{describe(node)} divides by a tensor ({describe(b)}), not a scale")
        if isinstance(s, float) and s == 0.0:
            raise NoMatch(f"{describe(node)} divides by zero")
        return a, ("div", s)
    for x, y, tx in ((a, b, ta), (b, a, tb)):
        if tx is not None and tx.dim() > 0:
            s = scalar_of(y)
            if s is not None:
                return x, ("mul", s)
    if ta is not None and tb is not None:
        raise NoMatch(f"{describe(node)} multiplies by a tensor, not a scale")
    return None


def peel_scale(node: Node, consumer: Node, factors: list, dead: list) -> Node:
    """Strip scalar mul/div from a product operand (q, k or kT) whose only user is `consumer`."""
    while isinstance(node, Node) and list(node.users) == [consumer]:
        if is_method(node, *INPLACE_METHODS):   # q.mul_(c) also changed q for its other readers
            return node
        try:
            step = scale_step(node)
        except NoMatch:
            return node
        if step is None:
            return node
        x, factor = step
        factors.append(factor)
        dead.append(node)
        consumer, node = node, x
    return node


# ----------------------------------------------------------------------------------------------
# Scores: the product q k^T

@dataclass
class Scores:
    node: Node
    q: Ref
    k: Ref
    form: str
    factors: list = field(default_factory=list)     # scale factors found on q/k and baddbmm alpha
    terms: list = field(default_factory=list)       # baddbmm input as an additive mask
    dead: list = field(default_factory=list)


def _einsum_parts(node: Node):
    eq = node.args[0]
    ops = list(node.args[1:])
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = list(ops[0])
    if not isinstance(eq, str) or len(ops) != 2 or "->" not in eq:
        raise NoMatch(f"einsum {eq!r} is not a two-operand product with an explicit output")
    lhs, out = eq.replace(" ", "").split("->")
    terms = lhs.split(",")
    shapes = [shape_of(o) for o in ops] + [shape_of(node)]
    if any(s is None for s in shapes):
        raise NoMatch("einsum without shape metadata")
    expanded = []
    for t, s in zip(terms + [out], shapes):
        if "..." in t:
            n = len(s) - (len(t) - 3)
            t = t.replace("...", "".join(chr(ord("A") + i) for i in range(n)))
        if len(t) != len(s) or len(set(t)) != len(t):
            raise NoMatch(f"einsum {eq!r}: unsupported subscripts")
        expanded.append(t)
    return expanded[0], expanded[1], expanded[2], ops


def _perm(src: str, dst: str) -> Optional[List[int]]:
    p = [src.index(c) for c in dst]
    return None if p == list(range(len(p))) else p


def _ref(node: Node, perm: Optional[List[int]]) -> Ref:
    s = shape_of(node)
    if perm is None:
        return Ref(node, shape=s)
    return Ref(node, [("permute", perm)], shape=tuple(s[i] for i in perm))


def parse_scores(node: Node) -> Scores:
    factors, dead, terms = [], [], []
    if is_einsum(node):
        a, b, o, (qn, kn) = _einsum_parts(node)
        batch, i, j = o[:-2], o[-2], o[-1]
        contracted = (set(a) | set(b)) - set(o)
        if len(contracted) != 1:
            raise NoMatch(f"einsum scores contract {len(contracted)} letters")
        c = contracted.pop()
        if not (set(a) == set(batch) | {i, c} and set(b) == set(batch) | {j, c} and i not in b and j not in a):
            raise NoMatch("einsum is not q k^T over shared batch letters")
        qn = peel_scale(qn, node, factors, dead)
        kn = peel_scale(kn, node, factors, dead)
        return Scores(node, _ref(qn, _perm(a, batch + i + c)), _ref(kn, _perm(b, batch + j + c)), "einsum",
                      factors, terms, dead)
    if is_baddbmm(node):
        inp, qn, kt = arg(node, 0, "input"), arg(node, 1, "batch1"), arg(node, 2, "batch2")
        beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
        alpha_s = scalar_of(alpha)
        if alpha_s is None:
            raise NoMatch(f"baddbmm alpha={describe(alpha)} is not a scalar")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise NoMatch(f"baddbmm beta={describe(beta)} is not a number")
        if isinstance(alpha_s, Node) or alpha_s != 1.0:
            factors.append(("mul", alpha_s))
        if float(beta) != 0.0:
            if not isinstance(inp, Node) or tensor_of(inp) is None:
                raise NoMatch("baddbmm input is not a tensor")
            terms.append(masks.MaskTerm("add", inp, dtype=dtype_of(node), scale=float(beta), origin="baddbmm input"))
        form = "baddbmm"
    elif is_matmul(node):
        qn, kt = node.args[0], node.args[1]
        form = "bmm" if _is_bmm(node) else "matmul"
    else:
        raise NoMatch(f"scores come from {describe(node)}, not q @ k^T")
    if not isinstance(qn, Node) or not isinstance(kt, Node):
        raise NoMatch("product operands are not tensors")
    qn = peel_scale(qn, node, factors, dead)
    kt = peel_scale(kt, node, factors, dead)
    kn = last_two_swapped(kt)
    if kn is not None and list(kt.users) == [node]:
        dead.append(kt)
        kn = peel_scale(kn, kt, factors, dead)
        k = Ref(kn, shape=shape_of(kn))
    else:
        s = shape_of(kt)
        if s is None:
            raise NoMatch("no shape for k^T")
        k = Ref(kt, [("transpose", -2, -1)], shape=tuple(s[:-2]) + (s[-1], s[-2]))
    return Scores(node, Ref(qn, shape=shape_of(qn)), k, form, factors, terms, dead)


def _is_bmm(node: Node) -> bool:
    return node.target in (torch.bmm, torch.Tensor.bmm, "bmm")


def produces_scores(node: Node) -> bool:
    return is_matmul(node) or is_einsum(node) or is_baddbmm(node)


# ----------------------------------------------------------------------------------------------
# Walking back from the softmax input to the scores

@dataclass
class Pre:
    scores: Scores
    steps: list = field(default_factory=list)   # forward order: ("scale", factor) | ("mask", term) | ("cast", node)
    nodes: list = field(default_factory=list)


INPLACE_METHODS = {"masked_fill_", "add_", "mul_", "div_"}


def inplace_steps(node: Node, consumer: Node) -> List[Node]:
    """In-place ops applied to `node` before `consumer` reads it (`s.masked_fill_(m, v)`, `s.mul_(c)`):
    Dynamo leaves them as user-less nodes on `node`, and `consumer` reads `node` itself. Returns them in
    graph order; any other user of `node` (or an in-place op after `consumer`) raises NoMatch."""
    extra = [u for u in node.users if u is not consumer]
    if not extra:
        return []
    found, n = [], node.next
    while n is not consumer and n.op != "output":
        if n in extra:
            found.append(n)
        n = n.next
    for u in extra:
        if (u not in found or not is_method(u, *INPLACE_METHODS) or u.args[0] is not node or u.users
                or any(a is node for a in u.args[1:]) or any(a is node for a in u.kwargs.values())):
            raise NoMatch(f"pre-softmax scores ({node.name}) have other users: {describe(u)}")
    return found


def _inplace_as_step(op: Node) -> tuple:
    if is_method(op, "mul_", "div_"):
        step = scale_step(op)
        if step is None or step[0] is not op.args[0]:
            raise NoMatch(f"{describe(op)} is not a scalar scale")
        return ("scale", step[1])
    alts = [(x, term) for x, term in masks.alternatives(op) if x is op.args[0]]
    if not alts:
        raise NoMatch(f"{describe(op)} is not a mask step")
    return ("mask", alts[0][1])


def walk_back(node: Node, consumer: Node, depth: int = 0) -> Pre:
    """Walk from the value `consumer` reads back to the scores product."""
    if depth > 24:
        raise NoMatch("too many steps between the scores and the softmax")
    if not isinstance(node, Node):
        raise NoMatch(f"softmax input is {describe(node)}")
    inplace = inplace_steps(node, consumer)
    pre = _walk_back_node(node, depth)
    for op in inplace:
        pre.steps.append(_inplace_as_step(op))
        pre.nodes.append(op)
    return pre


def _walk_back_node(node: Node, depth: int) -> Pre:
    if produces_scores(node):
        pre = Pre(parse_scores(node))
        pre.nodes.append(node)
        return pre
    src = cast_input(node)
    if src is not None:
        if not is_upcast_or_same(dtype_of(src), dtype_of(node)):
            raise NoMatch(f"scores cast from {dtype_of(src)} down to {dtype_of(node)} before the softmax")
        pre = walk_back(src, node, depth + 1)
        pre.steps.append(("cast", node))
        pre.nodes.append(node)
        return pre
    step = scale_step(node)
    if step is not None:
        x, factor = step
        pre = walk_back(x, node, depth + 1)
        pre.steps.append(("scale", factor))
        pre.nodes.append(node)
        return pre
    alts = masks.alternatives(node)
    if not alts:
        raise NoMatch(f"scores pass through {describe(node)}, not a scale, mask or cast")
    error = None
    for x, term in alts:
        try:
            if not isinstance(x, Node):
                raise NoMatch(f"{describe(node)}: scores operand is not a tensor")
            pre = walk_back(x, node, depth + 1)
        except NoMatch as e:
            error = error or e
            continue
        pre.steps.append(("mask", term))
        pre.nodes.append(node)
        return pre
    raise error


# ----------------------------------------------------------------------------------------------
# Walking forward from the softmax to the product with v

@dataclass
class Post:
    product: Node
    nodes: list
    dropout_p: object = 0.0
    dropout_form: str = ""


def dropout_parts(node: Node):
    """(p, training) of a dropout call on the weights, else None."""
    if is_function(node, F.dropout):
        return arg(node, 1, "p", 0.5), arg(node, 2, "training", True)
    if is_function(node, torch.dropout):
        return arg(node, 1, "p"), arg(node, 2, "train")
    return None


def walk_forward(sm: Node) -> Post:
    cur, nodes = sm, []
    p_eff, dform = 0.0, ""
    seen_dropout = False
    while True:
        users = list(cur.users)
        if len(users) != 1:
            names = ", ".join(describe(u) for u in users) or "none"
            raise NoMatch(f"attention weights ({cur.name}) have {len(users)} users: {names}")
        u = users[0]
        if cast_input(u) is cur:
            nodes.append(u)
            cur = u
            continue
        d = dropout_parts(u)
        if d is not None and u.args and u.args[0] is cur:
            if seen_dropout:
                raise NoMatch("two dropouts on the attention weights")
            seen_dropout = True
            p, training = d
            if not isinstance(training, bool):
                raise NoMatch(f"dropout training flag is not a constant ({describe(training)})")
            if isinstance(p, Node):
                if scalar_of(p) is not p:
                    raise NoMatch(f"dropout p is a tensor ({describe(p)})")
                p_eff = p if training else 0.0
            else:
                if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p < 1.0):
                    raise NoMatch(f"dropout p={p!r}")
                p_eff = float(p) if training else 0.0
            dform = " + dropout"
            nodes.append(u)
            cur = u
            continue
        if is_matmul(u) and u.args[0] is cur and (len(u.args) < 2 or u.args[1] is not cur):
            return Post(u, nodes, p_eff, dform)
        if is_einsum(u):
            ops = list(u.args[1:])
            if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
                ops = list(ops[0])
            if len(ops) == 2 and ops[0] is cur and ops[1] is not cur:
                return Post(u, nodes, p_eff, dform)
        raise NoMatch(f"attention weights ({cur.name}) feed {describe(u)}, not the product with v")


# ----------------------------------------------------------------------------------------------
# The whole pattern

def _looks_like_attention(sm: Node) -> bool:
    """Is this softmax worth a Skip record? (a product within a few steps before or after it)"""
    frontier, seen = [sm], set()
    for _ in range(8):
        nxt = []
        for n in frontier:
            for x in n.all_input_nodes:
                if x not in seen:
                    seen.add(x)
                    if produces_scores(x):
                        return True
                    nxt.append(x)
        frontier = nxt
    frontier = [sm]
    for _ in range(6):
        nxt = []
        for n in frontier:
            for u in n.users:
                if is_matmul(u) or is_einsum(u):
                    return True
                nxt.append(u)
        frontier = nxt
    return False


def match(sm: Node) -> Optional[AttentionPlan]:
    try:
        return _match(sm)
    except NoMatch:
        if not _looks_like_attention(sm):
            return None
        raise


def _match(sm: Node) -> AttentionPlan:
    x, dim, sm_dtype = softmax_parts(sm)
    tx = require_tensor(x, "softmax input")
    if not isinstance(dim, int):
        raise NoMatch(f"softmax dim is {dim!r}, not a constant int")
    if dim % max(tx.dim(), 1) != tx.dim() - 1:
        raise NoMatch(f"softmax over dim {dim}, not the last dim of a {tx.dim()}-D tensor")
    if sm_dtype is not None and not (isinstance(sm_dtype, torch.dtype) and is_upcast_or_same(tx.dtype, sm_dtype)):
        raise NoMatch(f"softmax(dtype={sm_dtype}) casts {tx.dtype} scores down before the softmax")
    post = walk_forward(sm)
    pre = walk_back(x, sm)
    sc = pre.scores

    # --- shapes ---------------------------------------------------------------------------
    S = shape_of(sc.node)
    if S is None or len(S) not in (3, 4):
        raise NoMatch(f"scores of shape {S} (need 3-D [B*H, n, n] or 4-D [B, H, n, n])")
    qs, ks = sc.q.shape, sc.k.shape
    if qs is None or ks is None or len(qs) != len(S) or len(ks) != len(S):
        raise NoMatch(f"q/k shapes {qs}/{ks} do not match {len(S)}-D scores")
    batch = S[:-2]
    if not (shape_eq(qs[:-2], batch) and shape_eq(ks[:-2], batch)):
        raise NoMatch(f"q {list(qs)} and k {list(ks)} batch dims differ from the scores' {list(S)} (broadcast)")
    if not (size_eq(qs[-2], S[-2]) and size_eq(ks[-2], S[-1]) and size_eq(qs[-1], ks[-1])):
        raise NoMatch(f"q {list(qs)} / k {list(ks)} do not give scores {list(S)}")
    if not shape_eq(shape_of(x), S):
        raise NoMatch("the scores change shape before the softmax")

    # --- steps: scale before masks, all masks broadcast to the scores ------------------------
    factors = list(sc.factors)
    terms = list(sc.terms)
    for kind, val in pre.steps:
        if kind == "scale":
            # A positive number times -inf is -inf: scaling after -inf fills commutes with them.
            # After an additive mask or a finite fill it would scale the mask too: left alone.
            commutes = all(t.neg_inf for t in terms) and not isinstance(val[1], Node) and val[1] > 0
            if terms and not commutes:
                raise NoMatch("the scores are scaled after a mask was applied")
            factors.append(val)
        elif kind == "mask":
            terms.append(val)
    for n in pre.nodes:
        if not shape_eq(shape_of(n) or (), S):
            raise NoMatch(f"{describe(n)} changes the scores' shape to {shape_of(n)}")
    for t in terms:
        masks.check_term(t, S)

    # --- the product with v ---------------------------------------------------------------
    prod = post.product
    w_final = post.nodes[-1] if post.nodes else sm
    tw = require_tensor(w_final, "attention weights")
    out = require_tensor(prod, "attention output")
    out_perm = None
    if is_einsum(prod):
        wl, vl, ol, (_, vn) = _einsum_parts(prod)
        bl, il, jl = wl[:-2], wl[-2], wl[-1]
        extra = set(vl) - set(wl)
        if len(extra) != 1 or jl in ol or set(vl) != set(bl) | {jl} | extra or set(ol) != set(bl) | {il} | extra:
            raise NoMatch(f"einsum {prod.args[0]!r} is not weights @ v")
        e = extra.pop()
        v = _ref(vn, _perm(vl, bl + jl + e))
        out_perm = _perm(bl + il + e, ol)
        pv_form = "einsum"
    else:
        vn = prod.args[1]
        if not isinstance(vn, Node):
            raise NoMatch("v is not a tensor")
        v = Ref(vn, shape=shape_of(vn))
        pv_form = "bmm" if _is_bmm(prod) else "matmul"
    vs = v.shape
    if vs is None or len(vs) != len(S) or not shape_eq(vs[:-2], batch) or not size_eq(vs[-2], S[-1]):
        raise NoMatch(f"v of shape {vs} does not match the weights {list(S)}")

    # --- GQA ---------------------------------------------------------------------------------
    dead = list(pre.nodes) + list(sc.dead) + [sm] + list(post.nodes)
    q, k = sc.q, sc.k
    group = 1
    if len(S) == 4 and not k.ops and not v.ops:
        folded = gqa.fold(k.node, v.node)
        if folded is not None:
            k0, v0, group = folded
            dead += gqa.repeat_nodes(k.node) + gqa.repeat_nodes(v.node)  # erased only if unused
            k, v = Ref(k0, shape=shape_of(k0)), Ref(v0, shape=shape_of(v0))

    # --- dtypes ----------------------------------------------------------------------------
    dq, dk, dv = dtype_of(q.node), dtype_of(k.node), dtype_of(v.node)
    if not all(d is not None and d.is_floating_point for d in (dq, dk, dv)):
        raise NoMatch("q/k/v are not floating point")
    compute = widest(dq, dk, dv)

    form = (f"{sc.form}" + (" (scale on q/k)" if sc.factors and sc.form != "baddbmm" else "")
            + f" -> softmax{post.dropout_form} -> {pv_form}"
            + (" + repeat_kv->enable_gqa" if group > 1 else "") + f" [{len(S)}-D]")
    return AttentionPlan(
        form=form, path=module_path([sc.node, prod]), anchor=sm, output=prod,
        q=q, k=k, v=v, mask_terms=terms, mask_kind=masks.kind_of(terms),
        dropout_p=post.dropout_p, is_causal=False, scale=factors, gqa=group,
        compute_dtype=compute if len({dq, dk, dv}) > 1 else None,
        op_dtype=compute, out_dtype=out.dtype, out_perm=out_perm, dead=dead)
