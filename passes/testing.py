"""Test helpers: capture a Dynamo graph cheaply and check a rewrite against the original graph.

    gm, inputs = capture(fn, *args)                # Dynamo only, no Inductor
    res = check_rewrite(fn, *args, sites=1)        # rewrite with c=inf, compare outputs and grads

The comparison runs the captured graph before and after the rewrite on the same example inputs
(parameters arrive as placeholders): outputs must match, and with c=inf so must the gradients of
a random projection of the outputs with respect to every input that requires grad.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from .rewrite import RewriteResult, rewrite_attention


def capture(fn: Callable, *args, dynamic: Optional[bool] = False, fullgraph: bool = True, **kwargs) -> Tuple[torch.fx.GraphModule, list]:
    graphs: List[Tuple[torch.fx.GraphModule, list]] = []

    def backend(gm, example_inputs):
        # dynamic=True passes sizes as SymInts: run the graph with their concrete values
        concrete = [x.node.hint if isinstance(x, (torch.SymInt, torch.SymFloat)) else x for x in example_inputs]
        graphs.append((gm, concrete))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, fullgraph=fullgraph, dynamic=dynamic)(*args, **kwargs)
    assert len(graphs) == 1, f"expected one graph, got {len(graphs)}"
    return graphs[0]


def exact(_path: str):
    return float("inf"), None


def sus_nodes(gm: torch.fx.GraphModule) -> list:
    return [n for n in gm.graph.nodes
            if n.op == "call_function" and n.target is torch.ops.sus.attention.default]


def _flat_tensors(x: Any) -> List[torch.Tensor]:
    out: List[torch.Tensor] = []
    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for y in x:
            out += _flat_tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            out += _flat_tensors(y)
    return out


def run_graph(gm, inputs, grad: bool, seed: int = 0):
    torch.manual_seed(seed)
    outs = _flat_tensors(gm(*inputs))
    if not grad:
        return [o.detach() for o in outs], []
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    floats = [o for o in outs if o.requires_grad and o.is_floating_point()]
    if not leaves or not floats:
        return [o.detach() for o in outs], []
    g = torch.Generator().manual_seed(1234)
    loss = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in floats)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [o.detach() for o in outs], [None if x is None else x.detach() for x in grads]


def assert_close_lists(a: Sequence, b: Sequence, atol: float, rtol: float, what: str):
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} tensors"
    for i, (x, y) in enumerate(zip(a, b)):
        if x is None or y is None:
            assert x is None and y is None, f"{what}[{i}]: one gradient is None"
            continue
        assert x.shape == y.shape, f"{what}[{i}]: shape {tuple(x.shape)} vs {tuple(y.shape)}"
        assert x.dtype == y.dtype, f"{what}[{i}]: dtype {x.dtype} vs {y.dtype}"
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{what}[{i}]: {m}")


def check_rewrite(fn: Callable, *args, sites: Optional[int] = None, skipped: Optional[int] = None,
                  grad: bool = True, atol: float = 1e-5, rtol: float = 1e-4, dynamic: Optional[bool] = False,
                  choose_c: Callable = exact, fullgraph: bool = True, **kwargs) -> Tuple[RewriteResult, torch.fx.GraphModule]:
    """Capture fn, rewrite, and compare the rewritten graph with the original one."""
    gm, inputs = capture(fn, *args, dynamic=dynamic, fullgraph=fullgraph, **kwargs)
    original = copy.deepcopy(gm)
    # (a min_length of 0 skips nothing, but takes every plan through the length check, as the
    # backend and inspect do)
    result = rewrite_attention(gm, choose_c, min_length=lambda device_type: 0)
    if sites is not None:
        assert len(result.sites) == sites, (
            f"expected {sites} sites, got {len(result.sites)}: {result.sites}; skipped: {result.skipped}")
    if skipped is not None:
        assert len(result.skipped) == skipped, f"expected {skipped} skips, got {result.skipped}"
    assert len(sus_nodes(gm)) == len(result.sites) or any("multi_head" in s.form for s in result.sites)
    ref_out, ref_grad = run_graph(original, inputs, grad)
    out, grads = run_graph(gm, inputs, grad)
    assert_close_lists(ref_out, out, atol, rtol, "output")
    if grad:
        assert_close_lists(ref_grad, grads, atol * 10, rtol * 10, "grad")
    return result, gm
