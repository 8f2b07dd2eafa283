"""The driver: find every attention site in a Dynamo FX graph and rewrite it to torch.ops.sus.attention.

    result = rewrite_attention(gm, choose_c)

Families, each a module with is_anchor(node) / what(node) / match(node):

    sdpa            F.scaled_dot_product_attention calls
    mha             F.multi_head_attention_forward calls (nn.MultiheadAttention, nn.Transformer*)
    matmul_softmax  explicit softmax(q k^T ...) @ v, anchored on the softmax

match() returns a plan, None (the node is no attention candidate at all: a softmax that is not
part of q k^T / @ v), or raises NoMatch(reason): then the candidate is left exactly as it was and
a Skip records why. Any other exception while matching (a bug) also becomes a Skip ("internal
matcher error"): matching never mutates the graph, so leaving that site alone is safe. Matching only reads the graph; plan.apply() mutates it, once choose_c has
given the site's c. choose_c(path) -> (c, rule label or None); its exceptions propagate.

min_length(device_type) -> int, if given: a site whose key length is below it for its device is
left as it was (a Skip says why: SUS saves no time there); a symbolic key length is not compared.

gm is mutated in place (graph.lint(); gm.recompile() when anything changed). A bug in a matcher
could raise out of here with the graph partly rewritten: callers that want to fall back to the
original graph should pass a copy (copy.deepcopy(gm)).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, Union

import torch.fx

from . import matmul_softmax, mha, sdpa
from .matcher import NoMatch, module_path

FAMILIES = (sdpa, mha, matmul_softmax)


@dataclass
class Site:
    path: str
    form: str
    q_shape: Optional[tuple]
    k_shape: Optional[tuple]
    v_shape: Optional[tuple]
    mask_kind: str
    causal: bool
    gqa: int
    dropout: Union[float, str]
    c: float
    rule: Optional[str]


@dataclass
class Skip:
    path: str
    what: str
    reason: str


@dataclass
class RewriteResult:
    sites: List[Site] = field(default_factory=list)
    skipped: List[Skip] = field(default_factory=list)


def _checkpoint_bodies(gm: torch.fx.GraphModule):
    """Subgraphs that Dynamo outlined for torch.utils.checkpoint regions (the body argument of
    torch.ops.higher_order.tag_activation_checkpoint). HF's gradient_checkpointing_enable puts
    every decoder layer in one."""
    hop = getattr(torch.ops.higher_order, "tag_activation_checkpoint", None)
    for node in gm.graph.nodes:
        if node.op != "get_attr" or hop is None:
            continue
        if not any(u.op == "call_function" and u.target is hop and u.args and u.args[0] is node for u in node.users):
            continue
        body = getattr(gm, node.target, None)
        if isinstance(body, torch.fx.GraphModule):
            yield body


def too_short(plan, min_length: Callable[[str], int]) -> Optional[str]:
    """Why the site is left as it was because its key length is below min_length, or None. Every
    plan family gives shapes() (q, k, v as the op sees them: [B, H, L, E]) and device_type."""
    k_shape, device = plan.shapes()[1], plan.device_type
    lk = k_shape[-2] if k_shape else None
    if device is None or not isinstance(lk, int):
        return None  # symbolic (dynamic shapes) or unknown: not comparable when the graph is compiled
    floor = min_length(device)
    if lk >= floor:
        return None
    return (f"key length {lk} < min_length {floor} ({device}): SUS saves no time on sequences this "
            "short, so the exact attention is kept (min_length=0 rewrites it)")


def rewrite_attention(gm: torch.fx.GraphModule,
                      choose_c: Callable[[str], Tuple[float, Optional[str]]],
                      min_length: Optional[Callable[[str], int]] = None,
                      _in_checkpoint: bool = False) -> RewriteResult:
    graph = gm.graph
    result = RewriteResult()
    changed = False
    for body in _checkpoint_bodies(gm):
        inner = rewrite_attention(body, choose_c, min_length, _in_checkpoint=True)
        result.sites += inner.sites
        result.skipped += inner.skipped
    for node in list(graph.nodes):
        if getattr(node, "_erased", False):
            continue
        for family in FAMILIES:
            if not family.is_anchor(node):
                continue
            try:
                plan = family.match(node)
            except NoMatch as e:
                result.skipped.append(Skip(module_path([node]), family.what(node), str(e)))
                break
            except Exception as e:  # a matcher bug: matching only reads, so leaving the site alone is safe
                result.skipped.append(Skip(module_path([node]), family.what(node),
                                           f"internal matcher error ({type(e).__name__}: {e})"))
                break
            if plan is None:
                break
            if _in_checkpoint and not (isinstance(plan.dropout_p, (int, float)) and plan.dropout_p == 0):
                # A checkpointed region is recomputed in the backward; the op would draw a new
                # dropout mask there, unlike torch's own dropout, whose RNG state is replayed.
                result.skipped.append(Skip(plan.path, plan.form, "dropout inside a torch.utils.checkpoint region: "
                                           "the recomputed forward would draw a different dropout mask"))
                break
            short = too_short(plan, min_length) if min_length is not None else None
            if short is not None:
                result.skipped.append(Skip(plan.path, plan.form, short))
                break
            c, rule = choose_c(plan.path)
            q_shape, k_shape, v_shape = plan.shapes()
            plan.apply(graph, c)
            changed = True
            result.sites.append(Site(
                path=plan.path, form=plan.form, q_shape=q_shape, k_shape=k_shape, v_shape=v_shape,
                mask_kind=plan.mask_kind, causal=bool(plan.is_causal), gqa=int(plan.gqa),
                dropout=plan.dropout_report, c=float(c), rule=rule))
            break
    if changed:
        graph.lint()
        gm.recompile()
    return result
