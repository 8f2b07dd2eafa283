"""Inductor post-grad pass of the sus backend: compiled graphs call the forward op without its
autograd layer.

sus::attention_forward carries its autograd formula (torch.library.register_autograd, ops.py):
AOTAutograd needs it to build the joint graph. After the partition it has nothing left to do, but
the forward graph Inductor compiles still calls the op through the dispatcher's Autograd key, and
that kernel is Python: ~45 us per call on the H200 host (of the op's ~106 us; the impl itself ~58,
benchmarks/overhead_pieces.py, stop 17), once per layer per step, on a step that is bound by host
time at 8k tokens (GPT-124M). This pass points those calls at sus::attention_forward_graph, the
same impl registered without autograd. It runs on every graph Inductor compiles for us, forward,
backward or inference; only forward and inference graphs hold the op.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

from . import ops  # noqa: F401  (defines both ops)


class ForwardWithoutAutograd(CustomGraphPass):
    """The pass. `then`: a post-grad pass the user had set (Inductor config or the backend's
    options), run after this one."""

    def __init__(self, then: Optional[Any] = None):
        self.then = then

    def __call__(self, graph: torch.fx.Graph) -> None:
        src, dst = torch.ops.sus.attention_forward.default, torch.ops.sus.attention_forward_graph.default
        for node in graph.nodes:
            if node.op == "call_function" and node.target is src:
                node.target = dst
        if self.then is not None:
            self.then(graph)

    def uuid(self) -> Optional[Any]:
        # None (not cacheable) when the chained pass has no uuid, as Inductor treats such a pass
        mine = "sus-fx: attention_forward without autograd in compiled graphs, v1"
        if self.then is None:
            return mine
        theirs = self.then.uuid() if hasattr(self.then, "uuid") else None
        return None if theirs is None else (mine, theirs)

    def __eq__(self, other) -> bool:  # (config patches compare values)
        return isinstance(other, ForwardWithoutAutograd) and other.then is self.then

    def __hash__(self) -> int:
        return hash((ForwardWithoutAutograd, id(self.then)))
