"""What the `sus` backend does to a model, without compiling or training it.

    report = sus_fx.inspect(model, x)                 # or inspect(model, *args, policy=..., c=..., **kwargs)
    print(report)                                     # table of rewritten sites, skipped candidates, warnings
    report.sites[0].path, report.sites[0].c           # one record per rewritten attention site
    print(report.graph_before, report.graph_after)    # readable FX code of every captured graph

`inspect` runs the model once through torch.compile with a capture backend: Dynamo traces it
exactly as for `backend="sus"`, the passes rewrite each graph, and the rewritten graph runs
eagerly (no Inductor, no backward). Graph breaks give several graphs; all are collected.

This module also holds what the backend and `inspect` share: running the passes on one graph
with a pristine backup (`rewrite_graph`) and the report types.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from passes import Site

from .policy import Policy, PolicyLike, format_c


class SusFallbackWarning(UserWarning):
    """The passes failed on a graph; it was compiled (or inspected) without SUS rewriting."""


# ----------------------------------------------------------------------------------------------
# FLOP estimates

def _dim(d: Any) -> Optional[int]:
    """A concrete size, or the hint of a symbolic one (no guard is added); None if unknown."""
    if isinstance(d, bool):
        return None
    if isinstance(d, int):
        return d
    node = getattr(d, "node", None)
    hint = getattr(node, "hint", None)
    if isinstance(hint, int):
        return hint
    return None


def size_resolver(shape_env: Any):
    """A function dim -> int | None that also evaluates symbolic sizes ("s27", "2*s27", SymInt)
    at the sizes of the example that triggered the compile (the shape env's hints)."""
    # backed_var_to_val on newer torch (var_to_val is deprecated there), var_to_val on 2.11
    var_to_val = getattr(shape_env, "backed_var_to_val", None)
    if var_to_val is None:
        var_to_val = getattr(shape_env, "var_to_val", None)
    var_to_val = dict(var_to_val or {})

    def resolve(d: Any) -> Optional[int]:
        v = _dim(d)
        if v is not None or not var_to_val:
            return v
        try:
            import sympy
            expr = getattr(getattr(d, "node", None), "expr", None)
            if expr is None and isinstance(d, str):
                expr = sympy.sympify(d, locals={str(k): k for k in var_to_val})
            if expr is None:
                return None
            val = sympy.sympify(expr).xreplace(var_to_val)
            return int(val) if getattr(val, "is_Integer", False) else None
        except Exception:
            return None

    return resolve


def _bhle(shape: Optional[Sequence[Any]], resolve=None) -> Optional[Tuple[int, int, int, int]]:
    """[B, H, L, E] (4-D) or [B, L, E] (3-D, H = 1), as ints; None if unknown."""
    if shape is None:
        return None
    dims = [(resolve or _dim)(d) for d in shape]
    if any(d is None for d in dims) or len(dims) not in (3, 4):
        return None
    if len(dims) == 3:
        return dims[0], 1, dims[1], dims[2]
    return tuple(dims)  # type: ignore[return-value]


def backward_flops(q_shape, k_shape, v_shape, c: float, causal: bool = False,
                   resolve=None) -> Tuple[Optional[float], Optional[float]]:
    """Estimated FLOPs of one attention backward: (exact, SUS). None when a shape is unknown.

    With q [B, H, Lq, E], k [B, Hk, Lk, E], v [B, Hk, Lk, Ev] (3-D inputs count as H = 1; with
    GQA, H is the number of query heads: every query head does its own work):

        exact = 2 * B*H*Lq*Lk' * (3E + 2Ev)
                  recompute S = Q K^T (E), dP = dO V^T (Ev), dV = P^T dO (Ev),
                  dQ = dS K (E), dK = dS^T Q (E); 2 FLOPs per multiply-add
        SUS   = 2 * B*H*Lq*Lk' * E                     dense sampling pass (recompute S -> W)
              + 2 * B*H*Lq*min(c, Lk') * (2E + 2Ev)    sparse pass over the kept entries:
                  dP and dV (Ev each), dQ and dK (E each) only where an entry was kept

    Lk' = Lk, or Lk / 2 with a causal mask (about half the entries are masked). The expected
    number of entries kept per row is sum_j min(1, c W_ij) <= min(c, Lk'), so the SUS figure is an
    upper bound; `sus_fx.stats()` measures the real count. c = inf is the exact backward, so
    SUS = exact. Other masks and dropout are not accounted for. Symbolic sizes (dynamic shapes)
    are evaluated by `resolve` (see size_resolver) at the sizes of the compiling example.
    """
    q, k, v = _bhle(q_shape, resolve), _bhle(k_shape, resolve), _bhle(v_shape, resolve)
    if q is None or k is None:
        return None, None
    B, H, Lq, E = q
    Lk = k[2]
    Ev = v[3] if v is not None else E
    lk = Lk / 2 if causal else Lk
    pairs = B * H * Lq * lk
    exact = 2.0 * pairs * (3 * E + 2 * Ev)
    if math.isinf(c):
        return exact, exact
    sus = 2.0 * pairs * E + 2.0 * B * H * Lq * min(c, lk) * (2 * E + 2 * Ev)
    return exact, sus


# ----------------------------------------------------------------------------------------------
# Report types

def _shape_str(shape) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _plain_shape(shape):
    if shape is None:
        return None
    return tuple(_dim(d) if _dim(d) is not None else str(d) for d in shape)


@dataclasses.dataclass
class SiteReport(Site):
    """One rewritten attention site: the passes' record (shapes made plain) plus where it sits
    and its estimated backward cost."""

    graph: int = 0  # index of the captured graph (graph breaks give several)
    backward_flops_exact: Optional[float] = None
    backward_flops_sus: Optional[float] = None

    @classmethod
    def from_site(cls, site: Any, graph: int = 0, resolve=None) -> "SiteReport":
        g = lambda name, default=None: getattr(site, name, default)  # noqa: E731
        c = float(g("c", math.inf))
        causal = bool(g("causal", False))
        exact, sus = backward_flops(g("q_shape"), g("k_shape"), g("v_shape"), c, causal, resolve)
        return cls(path=g("path", "") or "", form=str(g("form", "?")), q_shape=_plain_shape(g("q_shape")),
                   k_shape=_plain_shape(g("k_shape")), v_shape=_plain_shape(g("v_shape")),
                   mask_kind=str(g("mask_kind", "?")), causal=causal, gqa=int(g("gqa", 1) or 1),
                   dropout=g("dropout", 0.0), c=c, rule=g("rule"), graph=graph,
                   backward_flops_exact=exact, backward_flops_sus=sus)

    @property
    def flops_ratio(self) -> Optional[float]:
        if not self.backward_flops_exact or self.backward_flops_sus is None:
            return None
        return self.backward_flops_sus / self.backward_flops_exact


@dataclasses.dataclass
class SkipReport:
    """One attention-like candidate the passes left alone."""

    path: str
    what: str
    reason: str
    graph: int = 0

    @classmethod
    def from_skip(cls, skip: Any, graph: int = 0) -> "SkipReport":
        return cls(path=getattr(skip, "path", "") or "", what=str(getattr(skip, "what", "?")),
                   reason=str(getattr(skip, "reason", "?")), graph=graph)


@dataclasses.dataclass
class GraphRecord:
    """One captured Dynamo graph: its code before and after the passes."""

    index: int
    code_before: str
    code_after: str
    sites: List[SiteReport]
    skipped: List[SkipReport]
    error: Optional[str] = None  # why the passes failed (the graph then stays as it was)


def _fmt_flops(x: Optional[float]) -> str:
    if x is None:
        return "?"
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


class Report:
    """What the backend did (or would do) to each graph of a model.

    sites        list[SiteReport]: every rewritten attention site, all graphs
    skipped      list[SkipReport]: candidates left alone, with the reason
    graphs       list[GraphRecord]
    warnings     list[str]: policy rules that matched no site, pass failures (in the backend's
                 per-graph reports, "matched no site" means: in that graph)
    policy       the Policy in effect
    graph_before / graph_after: readable FX code of every graph (before / after the passes)
    """

    def __init__(self, graphs: Sequence[GraphRecord] = (), policy: Optional[Policy] = None,
                 warnings: Sequence[str] = ()):
        self.graphs: List[GraphRecord] = list(graphs)
        self.policy = policy
        self._extra_warnings = list(warnings)

    @property
    def sites(self) -> List[SiteReport]:
        return [s for g in self.graphs for s in g.sites]

    @property
    def skipped(self) -> List[SkipReport]:
        return [s for g in self.graphs for s in g.skipped]

    @property
    def errors(self) -> List[str]:
        return [f"graph {g.index}: {g.error}" for g in self.graphs if g.error]

    @property
    def warnings(self) -> List[str]:
        out = list(self._extra_warnings)
        out += [f"graph {g.index}: the passes failed, graph left unchanged: {g.error}"
                for g in self.graphs if g.error]
        if self.policy is not None:
            out += self.policy.warnings()
        return out

    def _joined(self, attr: str) -> str:
        if len(self.graphs) == 1:
            return getattr(self.graphs[0], attr)
        return "\n\n".join(f"# ---- graph {g.index} ----\n{getattr(g, attr)}" for g in self.graphs)

    @property
    def graph_before(self) -> str:
        return self._joined("code_before")

    @property
    def graph_after(self) -> str:
        return self._joined("code_after")

    @property
    def backward_flops_exact(self) -> Optional[float]:
        vals = [s.backward_flops_exact for s in self.sites]
        return None if any(v is None for v in vals) else float(sum(vals))

    @property
    def backward_flops_sus(self) -> Optional[float]:
        vals = [s.backward_flops_sus for s in self.sites]
        return None if any(v is None for v in vals) else float(sum(vals))

    def table(self, tablefmt: str = "simple") -> str:
        """The rewritten sites as a table (tabulate)."""
        from tabulate import tabulate
        multi = len(self.graphs) > 1
        rows = []
        for s in self.sites:
            gqa = f"x{s.gqa}" if s.gqa and s.gqa > 1 else "-"
            ratio = s.flops_ratio
            row = [s.path or "<root>", s.form, _shape_str(s.q_shape), _shape_str(s.k_shape), _shape_str(s.v_shape),
                   s.mask_kind, "yes" if s.causal else "-", gqa, s.dropout, format_c(s.c), s.rule or "-",
                   _fmt_flops(s.backward_flops_exact), _fmt_flops(s.backward_flops_sus),
                   "?" if ratio is None else f"{ratio:.2f}"]
            rows.append(([s.graph] if multi else []) + row)
        headers = (["graph"] if multi else []) + ["path", "form", "q", "k", "v", "mask", "causal", "gqa", "dropout",
                                                  "c", "rule", "bwd FLOPs exact", "bwd FLOPs sus", "sus/exact"]
        return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)

    def skipped_table(self, tablefmt: str = "simple") -> str:
        from tabulate import tabulate
        multi = len(self.graphs) > 1
        rows = [([s.graph] if multi else []) + [s.path or "<root>", s.what, s.reason] for s in self.skipped]
        headers = (["graph"] if multi else []) + ["path", "what", "reason"]
        return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)

    def summary(self) -> str:
        n, k, g = len(self.sites), len(self.skipped), len(self.graphs)
        s = (f"sus-fx: {n} attention site{'s' if n != 1 else ''} rewritten, {k} left alone, "
             f"in {g} graph{'s' if g != 1 else ''}")
        ex, su = self.backward_flops_exact, self.backward_flops_sus
        if n and ex and su is not None:
            s += f"; est. attention backward FLOPs {_fmt_flops(ex)} exact -> {_fmt_flops(su)} with SUS ({su / ex:.2f}x)"
        return s

    def __str__(self) -> str:
        parts = [self.summary()]
        if self.sites:
            parts.append(self.table())
        if self.skipped:
            parts.append("left alone:\n" + self.skipped_table())
        if self.policy is not None and self.policy.source:
            parts.append(f"policy: {self.policy.source}")
        if self.warnings:
            parts.append("\n".join(f"warning: {w}" for w in self.warnings))
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return f"<sus_fx Report: {len(self.sites)} sites, {len(self.skipped)} skipped, {len(self.graphs)} graphs>"


# ----------------------------------------------------------------------------------------------
# Running the passes on one graph (shared with the backend)

def readable_code(gm: torch.fx.GraphModule) -> str:
    try:
        code = gm.print_readable(print_output=False, include_stride=False, include_device=False)
    except TypeError:  # older print_readable signature
        code = gm.print_readable(print_output=False)
    except Exception:  # never let the report break compilation
        code = gm.code
    return code.strip("\n")


def clone_graph_module(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy with its own graph that shares parameters, buffers and submodules with `gm`
    (a deepcopy of the whole module would duplicate weights and Dynamo's shape env)."""
    graph = copy.deepcopy(gm.graph)
    new = torch.fx.GraphModule(gm, graph, class_name=type(gm).__name__)
    for key, value in vars(gm).items():  # Dynamo's extras: shape_env, _param_name_to_source, ...
        if key not in vars(new):
            setattr(new, key, value)
    new.meta = dict(getattr(gm, "meta", {}))
    for old, node in zip(gm.graph.find_nodes(op="placeholder"), graph.find_nodes(op="placeholder")):
        if hasattr(old, "_dynamo_source"):  # AOTAutograd asserts it on Dynamo graphs (graph deepcopy drops it)
            node._dynamo_source = old._dynamo_source
    return new


def _shape_env_of(gm: torch.fx.GraphModule):
    env = getattr(gm, "shape_env", None)
    if env is not None:
        return env
    for node in gm.graph.find_nodes(op="placeholder"):
        val = node.meta.get("example_value", node.meta.get("val"))
        env = getattr(getattr(val, "fake_mode", None), "shape_env", None) or \
            getattr(getattr(val, "node", None), "shape_env", None)
        if env is not None:
            return env
    return None


def rewrite_graph(gm: torch.fx.GraphModule, policy: Policy, *, strict: bool = False, index: int = 0
                  ) -> Tuple[torch.fx.GraphModule, GraphRecord, Optional[torch.fx.GraphModule]]:
    """Run the passes on `gm` (in place). Returns (graph to use, its record, pristine backup).

    The backup is a copy of the graph taken before the passes ran (None with strict=True). If
    the passes raise, warn (SusFallbackWarning) and return the backup as the graph to use; with
    strict=True, re-raise instead."""
    before = readable_code(gm)
    backup = None if strict else clone_graph_module(gm)
    try:
        import passes
        result = passes.rewrite_attention(gm, policy.choose, min_length=policy.min_length_for)
    except Exception as e:
        if strict:
            raise
        why = f"{type(e).__name__}: {e}"
        warnings.warn(f"sus-fx: the attention passes failed on graph {index} ({why}); this graph is left "
                      "as it was: under the backend it compiles with plain Inductor, without SUS (exact "
                      "backward everywhere). Pass options={'strict': True} to make this an error.",
                      SusFallbackWarning, stacklevel=2)
        return backup, GraphRecord(index, before, before, [], [], error=why), backup
    after = readable_code(gm)
    resolve = size_resolver(_shape_env_of(gm))
    sites = [SiteReport.from_site(s, index, resolve) for s in getattr(result, "sites", [])]
    skipped = [SkipReport.from_skip(s, index) for s in getattr(result, "skipped", [])]
    return gm, GraphRecord(index, before, after, sites, skipped), backup


# ----------------------------------------------------------------------------------------------
# inspect

def _cuda_devices(model, args, kwargs) -> List[int]:
    devs = set()
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    if isinstance(model, torch.nn.Module):
        tensors += list(model.parameters())[:1] + list(model.buffers())[:1]
    for t in tensors:
        if t.device.type == "cuda":
            devs.add(t.device.index or 0)
    return sorted(devs)


def inspect(model, *example_args, policy: PolicyLike = None, c: Optional[float] = None,
            min_length: Optional[Union[int, str]] = None, **example_kwargs) -> Report:
    """Trace `model(*example_args, **example_kwargs)` as `torch.compile(model, backend="sus")`
    would and return a Report of what the passes rewrite and leave alone.

    policy: a policy file path, a Policy, None (use $SUS_FX_POLICY if set) or False (none).
    c:      replaces the policy's default c (rules still win); "exact" or inf for exact.
    min_length: replaces the policy's min_length (sites with shorter keys are left as they were;
            "auto": the device's default, sus_fx.policy.AUTO_MIN_LENGTH).

    The model runs once (forward only, with the rewritten graphs, whose forward is exact); the
    random state is restored afterwards. No Inductor compile and no backward. Dynamo's caches are
    reset before and after (like torch.compiler.reset()), so compiled models recompile on their
    next call.
    """
    pol = Policy.resolve(policy, c, min_length)
    graphs: List[GraphRecord] = []

    def capture(gm, example_inputs, **_):
        gm, record, _ = rewrite_graph(gm, pol, index=len(graphs))
        graphs.append(record)
        return gm.forward

    torch.compiler.reset()
    try:
        compiled = torch.compile(model, backend=capture)
        with torch.random.fork_rng(devices=_cuda_devices(model, example_args, example_kwargs)):
            compiled(*example_args, **example_kwargs)
    finally:
        torch.compiler.reset()
    report = Report(graphs, pol)
    if not graphs:
        report._extra_warnings.append("Dynamo captured no graph (nothing to compile in this call)")
    return report
