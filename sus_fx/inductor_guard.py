"""Inductor's own fused-attention rewrites, off inside the sus backend's compiles; the rest of its
joint-graph pass on.

Inductor's joint-graph pattern pass holds, among its rewrites, the `_sfdp_pattern_*` replacements
of torch/_inductor/fx_passes/fuse_attention.py (softmax(q k^T) v -> SDPA). The sus passes own
attention, and those patterns are unsound (pytorch issue 196468: a softmax over a non-last dim is
rewritten as if it were over the last one). torch has no switch for them alone. Until stop 14 the
backend turned the whole joint-graph pass off (`use_joint_graph_passes=False`); that also lost the
pass's other rewrites, and with them one fp32 [tokens, vocab] buffer of a GPT's loss (GPT-124M,
H200: +1.5 GiB at 8k tokens, +3 GiB at 16k, against backend="inductor").

Here the pass stays on. Two custom joint-graph passes, set through the compile's config patches,
bracket its pattern rewrites: the pre pass (run after Inductor has registered its patterns for the
graph's device, before any is applied) takes the fused-attention entries out of the pattern table,
the post pass puts them back. Only compiles of the sus backend see the table without them. The
passes' uuids put those compiles under their own keys in Inductor's caches, so a graph compiled by
plain Inductor (attention fused) is never loaded for ours. A compile that fails between the two
passes is cleaned up by `restore()` (called by the backend whatever happens).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, List, Tuple

from torch._inductor.custom_graph_pass import CustomGraphPass

_lock = threading.Lock()
_hidden: List[Tuple[Any, list]] = []  # (key, the entries as they were) of the joint-graph pattern table


def _is_fused_attention(entry) -> bool:
    """An entry registered by fuse_attention.py: by name (torch 2.13 names entries after their
    pattern) or by the search function held in its check's closure (any version)."""
    if "sfdp" in (getattr(entry, "pattern_name", None) or ""):
        return True
    for cell in getattr(getattr(entry, "extra_check", None), "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if str(getattr(value, "__module__", "")).endswith("fuse_attention"):
            return True
    return False


def _pattern_table() -> Dict[Any, list]:
    from torch._inductor.fx_passes import joint_graph
    return joint_graph.patterns.patterns


def hide() -> int:
    """Take the fused-attention entries out of the joint-graph pattern table; how many."""
    n = 0
    with _lock:
        table = _pattern_table()
        for key, entries in list(table.items()):
            keep = [e for e in entries if not _is_fused_attention(e)]
            if len(keep) != len(entries):
                _hidden.append((key, entries))
                table[key] = keep
                n += len(entries) - len(keep)
    return n


def restore() -> None:
    with _lock:
        table = _pattern_table()
        while _hidden:
            key, entries = _hidden.pop()
            table[key] = entries


class _HideFusedAttention(CustomGraphPass):
    def __call__(self, graph) -> None:
        hide()

    def uuid(self) -> str:
        return "sus-fx: Inductor fused-attention patterns hidden, v1"


class _RestoreFusedAttention(CustomGraphPass):
    def __call__(self, graph) -> None:
        restore()

    def uuid(self) -> str:
        return "sus-fx: Inductor fused-attention patterns restored, v1"


HIDE = _HideFusedAttention()
RESTORE = _RestoreFusedAttention()
