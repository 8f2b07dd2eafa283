"""Gradient quality of SUS backprop: the paper's relative variance increase, measured.

For a model, a source of batches and a batch size, and for each configuration of c (one c for
every attention site, one site sampled and the rest exact, or any per-site policy):

  (a) the variance of the ordinary minibatch gradient: over `batches` different batches, exact
      backward. Trace of the covariance, i.e. sum over parameter entries of Var_batch[g].
  (b) the extra variance the SUS masks add: on `fixed_batches` fixed batches, over `draws` mask
      draws, E ||g_sus - g_exact||^2 (the same trace; the estimator is unbiased, so this is its
      variance over draws, with the exact gradient of the batch as the known mean).
  (b) / (a) is the paper's "relative gradient variance increase" (same batch size in both).

Both are reported for all parameters and per parameter group (one group per attention layer:
the parameters under the layer's module, e.g. ``blocks.3`` or ``encoder.layer.3``; ``other`` for
the rest), with the fraction of attention entries the backward cut (``sus_fx.stats()``).

    from sus_fx.variance import measure, format_table
    res = measure(model, get_batch, cs=[8, 16, 32], batches=16, draws=4, per_site=True)
    print(format_table(res)); json.dump(res, open("v.json", "w"))

Engines: ``engine="compile"`` compiles the model with ``sus_fx.make_backend`` (one compile per
configuration); ``engine="patch"`` (no compile, cheap on CPU) routes every
``torch.nn.functional.scaled_dot_product_attention`` call made inside the model to
``sus_fx.sus_attention`` with the c the policy gives for the calling module's path (the same
path the backend's policy sees, e.g. ``blocks.0.attn``). Sites whose c is inf run the original
SDPA. Both run the same op and the same backward.

CLI (``sus-fx variance``), model protocol: ``--model FILE.py:FACTORY`` names a function

    def FACTORY(*, n: int, batch_size: int, device: str, **kw)  # accept only the ones you use
        return model, get_batch                # or (model, get_batch, loss_fn)

- ``model``: a torch.nn.Module whose attention calls F.scaled_dot_product_attention.
- ``get_batch(i)``: batch number i (i = 0, 1, ...), deterministic in i, ``batch_size`` sequences
  of length n, on ``device``. Any object.
- ``loss_fn(model, batch)`` -> scalar loss. Without it: ``model(*batch)`` for a tuple/list,
  ``model(**batch)`` for a dict, else ``model(batch)``; the result, or its ``.loss``, or its
  ``["loss"]``, is the scalar loss.
The model is measured in eval mode (no dropout) unless ``train_mode=True``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Policy = Callable[[str], float]  # module path -> c (float("inf") = exact)
INF = float("inf")


# ----------------------------------------------------------------------------------------------
# Policies

def uniform(c: float) -> Policy:
    c = float(c)
    return lambda path: c


def only(site: str, c: float) -> Policy:
    """c at one site, exact elsewhere."""
    c = float(c)
    return lambda path: c if path == site else INF


def from_mapping(mapping: Dict[str, float], default: float = INF) -> Policy:
    """c per exact module path or fnmatch glob (first matching key wins), `default` elsewhere."""
    import fnmatch
    items = list(mapping.items())

    def pol(path: str) -> float:
        for k, v in items:
            if path == k or fnmatch.fnmatchcase(path, k):
                return float(v)
        return float(default)
    return pol


def _c_str(c: Optional[float]) -> str:
    if c is None:
        return "-"
    return "exact" if math.isinf(c) else f"{c:g}"


# ----------------------------------------------------------------------------------------------
# The patch engine

class _PathTracker:
    """Forward hooks that keep the stack of module paths being run inside `model`."""

    def __init__(self, model: torch.nn.Module):
        self.stack: List[str] = []
        self.handles = []
        for name, mod in model.named_modules():
            self.handles.append(mod.register_forward_pre_hook(self._pre(name)))
            self.handles.append(mod.register_forward_hook(self._post(name), always_call=True))

    def _pre(self, name):
        def hook(mod, args):
            self.stack.append(name)
        return hook

    def _post(self, name):
        def hook(mod, args, out):
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
        return hook

    def current(self) -> Optional[str]:
        return self.stack[-1] if self.stack else None

    def remove(self):
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def sus_patch(model: torch.nn.Module, policy: Policy, sites: Optional[List[str]] = None):
    """Within the block, F.scaled_dot_product_attention called from inside `model` runs
    sus_fx.sus_attention with c = policy(innermost module path); c = inf runs the original SDPA.
    Paths of the calling modules are appended (once each, in call order) to `sites` if given."""
    from .ops import sus_attention
    tracker = _PathTracker(model)
    original = F.scaled_dot_product_attention

    def patched(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                enable_gqa=False, **kw):
        path = tracker.current()
        if path is None or kw:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa, **kw)
        if sites is not None and path not in sites:
            sites.append(path)
        c = float(policy(path))
        if math.isinf(c):
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa)
        return sus_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, c=c)

    F.scaled_dot_product_attention = patched
    torch.nn.functional.scaled_dot_product_attention = patched
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
        torch.nn.functional.scaled_dot_product_attention = original
        tracker.remove()


# ----------------------------------------------------------------------------------------------
# The compile engine

def _compiled(model: torch.nn.Module, policy: Policy, sites: Sequence[str]):
    """torch.compile(model) with the sus backend; c per site from `policy` (resolved on the known sites)."""
    import sus_fx
    import torch._dynamo
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, attr):
            setattr(torch._dynamo.config, attr, max(getattr(torch._dynamo.config, attr), 512))
    from .policy import Policy, Rule
    rules = tuple(Rule(i + 1, _glob_escape(s), float(policy(s))) for i, s in enumerate(sites))
    backend = sus_fx.make_backend(policy=Policy(rules, default_c=INF, source="sus_fx.variance"), strict=True)
    return torch.compile(model, backend=backend)


def _glob_escape(path: str) -> str:
    """An fnmatch pattern matching exactly `path`."""
    return re.sub(r"([\[\]*?])", r"[\1]", path)


# ----------------------------------------------------------------------------------------------
# Helpers

def _loss(model, batch, loss_fn):
    if loss_fn is not None:
        out = loss_fn(model, batch)
    elif isinstance(batch, dict):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        out = model(batch)
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "loss") and out.loss is not None:
        return out.loss
    if isinstance(out, dict) and "loss" in out:
        return out["loss"]
    raise TypeError("the model (or loss_fn) must return a scalar loss, an object with .loss, or a dict with 'loss'")


def layer_prefix(site: str) -> str:
    """The layer a site belongs to: the longest prefix ending in a numeric component
    ('encoder.layer.3.attention.self' -> 'encoder.layer.3'), else the parent module."""
    parts = site.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) if len(parts) > 1 else site


class _Grads:
    """Parameter list, group index and flat-gradient extraction."""

    def __init__(self, model: torch.nn.Module, sites: Sequence[str], group_by: str = "layer"):
        self.names, self.params = [], []
        for n, p in model.named_parameters():
            if p.requires_grad:
                self.names.append(n)
                self.params.append(p)
        if group_by == "param":
            self.groups = list(self.names)
            self.group_of = list(range(len(self.names)))
            return
        if group_by != "layer":
            raise ValueError(f"group_by must be 'layer' or 'param', got {group_by!r}")
        prefixes = []
        for s in sites:
            pre = layer_prefix(s)
            if pre not in prefixes:
                prefixes.append(pre)
        self.groups = prefixes + ["other"]
        self.group_of = []
        for n in self.names:
            g = "other"
            for pre in prefixes:
                if pre == "" or n.startswith(pre + "."):
                    g = pre
                    break
            self.group_of.append(self.groups.index(g))

    def grad(self, model, batch, loss_fn) -> List[torch.Tensor]:
        for p in self.params:
            p.grad = None
        loss = _loss(model, batch, loss_fn)
        loss.backward()
        out = [(p.grad.detach().double().flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=torch.float64,
                                                                                           device=p.device))
               for p in self.params]
        for p in self.params:
            p.grad = None
        return out

    def group_sq(self, vecs: List[torch.Tensor]) -> List[float]:
        """Squared norm of a per-parameter vector list, summed per group."""
        acc = [0.0] * len(self.groups)
        for gi, v in zip(self.group_of, vecs):
            acc[gi] += float(v.pow(2).sum())
        return acc


class _Welford:
    """Running mean (flat float64 vectors) and per-group sum of squared deviations."""

    def __init__(self, G: "_Grads"):
        self.G, self.k, self.mean = G, 0, None
        self.m2 = [0.0] * len(G.groups)

    def add(self, g: List[torch.Tensor]) -> None:
        self.k += 1
        if self.mean is None:
            self.mean = [v.clone() for v in g]
            return
        delta = [v - m for v, m in zip(g, self.mean)]
        for m, d in zip(self.mean, delta):
            m.add_(d / self.k)
        for gi, d, v, m in zip(self.G.group_of, delta, g, self.mean):
            self.m2[gi] += float((d * (v - m)).sum())

    def variance(self) -> List[float]:
        return [x / (self.k - 1) for x in self.m2] if self.k > 1 else [float("nan")] * len(self.m2)


class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = None
        self.enabled = enabled
        self.total, self.done, self.t0, self.last = total, 0, time.time(), 0.0
        self.desc = desc
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, k: int = 1, note: str = ""):
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
            if note:
                self.bar.set_postfix_str(note, refresh=False)
        elif self.enabled and (time.time() - self.last > 5 or self.done == self.total):
            self.last = time.time()
            el = self.last - self.t0
            eta = el / max(1, self.done) * (self.total - self.done)
            print(f"{self.desc}: {self.done}/{self.total} backwards, {el:.0f}s elapsed, ~{eta:.0f}s left {note}",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------
# The measurement

def discover_sites(model, batch, loss_fn=None) -> List[str]:
    """Module paths that call F.scaled_dot_product_attention in one forward, in call order."""
    sites: List[str] = []
    with torch.no_grad(), sus_patch(model, uniform(INF), sites):
        _loss(model, batch, loss_fn)
    return sites


def measure(model: torch.nn.Module, get_batch: Callable[[int], Any], *, cs: Iterable[float] = (8, 16, 32),
            batches: int = 16, fixed_batches: int = 4, draws: int = 2, per_site: bool = False,
            site_cs: Optional[Iterable[float]] = None, policies: Optional[Dict[str, Policy]] = None,
            loss_fn: Optional[Callable] = None, engine: str = "patch", batch_size: Optional[int] = None,
            n: Optional[int] = None, seed: int = 0, progress: bool = True, train_mode: bool = False,
            sites: Optional[Sequence[str]] = None, label: str = "", group_by: str = "layer") -> Dict[str, Any]:
    """Measure (a) minibatch-gradient variance and (b) SUS extra variance; see the module doc.

    cs: uniform c values (one configuration each). per_site: also one configuration per
    (site, c in site_cs or cs) with every other site exact. policies: extra named per-site
    policies. group_by: "layer" (parameters under each attention layer's block, plus "other") or
    "param" (one group per parameter tensor). Returns a dict (see `format_table`; `jsonable` for JSON)."""
    if engine not in ("patch", "compile"):
        raise ValueError(f"engine must be 'patch' or 'compile', got {engine!r}")
    if batches < 2:
        raise ValueError("batches must be >= 2 (a variance over batches)")
    fixed_batches = max(1, min(fixed_batches, batches))
    t_start = time.time()
    was_training = model.training
    model.train(train_mode)
    first = get_batch(0)
    if sites is None:
        sites = discover_sites(model, first, loss_fn)
    sites = list(sites)
    if not sites:
        raise RuntimeError("no attention site found: the model never called F.scaled_dot_product_attention")
    configs: List[Tuple[str, Dict[str, Any], Policy]] = []
    for c in cs:
        configs.append((f"all c={_c_str(float(c))}", {"kind": "uniform", "c": float(c), "site": None}, uniform(c)))
    if per_site:
        for s in sites:
            for c in (site_cs if site_cs is not None else cs):
                configs.append((f"{s} c={_c_str(float(c))}", {"kind": "site", "c": float(c), "site": s}, only(s, c)))
    for name, pol in (policies or {}).items():
        configs.append((name, {"kind": "policy", "c": None, "site": None,
                               "policy": {s: _json_c(pol(s)) for s in sites}}, pol))
    G = _Grads(model, sites, group_by)
    from .stats import stats as _stats_ctx

    compiled: Dict[str, Any] = {}

    def runner(label_, pol):
        if engine == "patch":
            return model, sus_patch(model, pol)
        if label_ not in compiled:
            compiled[label_] = _compiled(model, pol, sites)
        return compiled[label_], contextlib.nullcontext()

    total = batches + fixed_batches * len(configs) * draws
    bar = _Progress(total, progress, label or "variance")
    # (a) ordinary minibatch gradient variance over batches: Welford on flat float64 vectors, for
    # all batches and for the even / odd halves (two independent estimates: the spread of the
    # halves gives the standard error of (a)).
    welford = [_Welford(G), _Welford(G), _Welford(G)]
    fixed_exact: List[List[torch.Tensor]] = []
    for i in range(batches):
        batch = first if i == 0 else get_batch(i)
        g = G.grad(model, batch, loss_fn)
        if i < fixed_batches:
            fixed_exact.append(g)
        welford[0].add(g)
        if batches >= 4:
            welford[1 + i % 2].add(g)
        bar.update(1, "exact")
    var_a = welford[0].variance()
    a_total = sum(var_a)
    mean_sq = G.group_sq(welford[0].mean)
    a_se = None
    if batches >= 4:
        h = [sum(w.variance()) for w in welford[1:]]
        a_se = abs(h[0] - h[1]) / 2
    del welford

    # (b) extra variance over mask draws on fixed batches.
    acc = {lab: {"dev": [], "dev_groups": [0.0] * len(G.groups), "kept": 0.0, "valid": 0.0, "rows": 0.0, "full": 0.0,
                 "kept_max": 0.0, "backwards": 0} for lab, _, _ in configs}
    for f in range(fixed_batches):
        batch = first if f == 0 else get_batch(f)
        g0 = fixed_exact[f]
        for ci, (lab, info, pol) in enumerate(configs):
            fwd, ctx = runner(lab, pol)
            with ctx:
                for d in range(draws):
                    torch.manual_seed(hash((seed, f, ci, d)) & 0x7FFFFFFF)
                    with _stats_ctx() as rec:
                        g = G.grad(fwd, batch, loss_fn)
                    diff = [a - b for a, b in zip(g, g0)]
                    dg = G.group_sq(diff)
                    A = acc[lab]
                    A["dev"].append(sum(dg))
                    for k in range(len(dg)):
                        A["dev_groups"][k] += dg[k]
                    recs = [r for r in rec.records if not math.isinf(r.c)]
                    A["kept"] += sum(r.kept_total for r in recs)
                    A["valid"] += sum(r.valid_total for r in recs)
                    A["rows"] += sum(r.rows for r in recs)
                    A["full"] += sum(math.prod(r.shape) for r in recs)
                    A["kept_max"] = max([A["kept_max"]] + [r.kept_max for r in recs])
                    A["backwards"] += 1
                    bar.update(1, lab)
    bar.close()
    model.train(was_training)

    rows = []
    for lab, info, _ in configs:
        A = acc[lab]
        k = len(A["dev"])
        b = sum(A["dev"]) / k
        se = (math.sqrt(sum((x - b) ** 2 for x in A["dev"]) / (k - 1) / k) if k > 1 else float("nan"))
        per_group = {}
        for gi, gname in enumerate(G.groups):
            bg = A["dev_groups"][gi] / k
            per_group[gname] = {"extra_variance": bg, "minibatch_variance": var_a[gi],
                                "relative_increase": bg / var_a[gi] if var_a[gi] > 0 else None}
        nb = max(1, A["backwards"])
        rows.append({
            "config": lab, **info,
            "extra_variance": b, "extra_variance_se": se,
            "relative_increase": b / a_total if a_total > 0 else None,
            # standard error of (b)/(a): that of (b) over draws and fixed batches, and that of (a)
            # from the spread of its two half-sample estimates, combined
            "relative_increase_se": (b / a_total) * math.sqrt((se / b if b > 0 else 0.0) ** 2
                                                              + ((a_se / a_total) if a_se is not None else 0.0) ** 2)
            if a_total > 0 and math.isfinite(se) else None,
            "relative_increase_se_extra_only": se / a_total if a_total > 0 else None,
            "fraction_cut": (1.0 - A["kept"] / A["valid"]) if A["valid"] else 0.0,
            # of all Lq x Lk entries, masked ones included (the paper's c/n view for causal models)
            "fraction_cut_full": (1.0 - A["kept"] / A["full"]) if A["full"] else 0.0,
            "kept_per_row": A["kept"] / A["rows"] if A["rows"] else 0.0,
            "kept_per_row_max": A["kept_max"],
            "kept_entries": A["kept"] / nb, "valid_entries": A["valid"] / nb,
            "per_group": per_group,
        })
    return {
        "meta": {"label": label, "n": n, "batch_size": batch_size, "batches": batches,
                 "fixed_batches": fixed_batches, "draws": draws, "engine": engine, "seed": seed,
                 "device": str(next(iter(model.parameters())).device), "train_mode": train_mode,
                 "torch": torch.__version__, "seconds": time.time() - t_start,
                 "params": int(sum(p.numel() for p in G.params))},
        "sites": sites,
        "groups": G.groups,
        "minibatch_variance": {"total": a_total, "total_se": a_se, "per_group": dict(zip(G.groups, var_a)),
                               "mean_grad_sq_norm": sum(mean_sq)},
        "rows": rows,
    }


def jsonable(obj):
    """The results with float inf (exact c) as the string "exact" and nan as None: strict JSON."""
    if isinstance(obj, float):
        if math.isinf(obj):
            return "exact" if obj > 0 else "-inf"
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def load_results(path: str) -> List[Dict]:
    """Read a JSON written by `sus-fx variance --json` (c "exact" back to inf)."""
    with open(path) as f:
        data = json.load(f)
    data = data if isinstance(data, list) else [data]
    for res in data:
        for row in res["rows"]:
            if row.get("c") == "exact":
                row["c"] = INF
    return data


def _json_c(c: float):
    c = float(c)
    return "exact" if math.isinf(c) else c


# ----------------------------------------------------------------------------------------------
# Output

def _pct(x, se=None):
    if x is None:
        return "-"
    s = f"{100 * x:.3g}%"
    if se is not None and math.isfinite(se):
        s += f" ± {100 * se:.2g}"
    return s


def format_table(results: Union[Dict, List[Dict]], tablefmt: str = "github", groups: bool = False) -> str:
    """One table over one or several `measure` results (several: one per n)."""
    from tabulate import tabulate
    if isinstance(results, dict):
        results = [results]
    lines = []
    rows = []
    for res in results:
        n = res["meta"].get("n")
        for r in res["rows"]:
            rows.append([n if n is not None else "-", r["config"], _c_str(r.get("c")),
                         _pct(r["relative_increase"], r["relative_increase_se"]), f"{100 * r['fraction_cut']:.2f}%",
                         f"{100 * r.get('fraction_cut_full', r['fraction_cut']):.2f}%", f"{r['kept_per_row']:.1f}"])
    lines.append(tabulate(rows, headers=["n", "config", "c", "rel. variance increase (b)/(a)", "% cut",
                                         "% cut of n x n", "kept/row"], tablefmt=tablefmt))
    if groups:
        for res in results:
            grows = []
            for r in res["rows"]:
                if r["kind"] != "uniform":
                    continue
                grows.append([r["config"]] + [_pct(r["per_group"][g]["relative_increase"]) for g in res["groups"]])
            lines.append(f"\nper parameter group, n={res['meta'].get('n')}:")
            lines.append(tabulate(grows, headers=["config"] + res["groups"], tablefmt=tablefmt))
    return "\n".join(lines)


def table_grid(results: List[Dict], value: str = "relative_increase", tablefmt: str = "github") -> str:
    """c (rows) x n (columns) grid of one quantity of the uniform configurations."""
    from tabulate import tabulate
    ns = [r["meta"]["n"] for r in results]
    cs = sorted({row["c"] for r in results for row in r["rows"] if row["kind"] == "uniform"})
    body = []
    for c in cs:
        line = [_c_str(c)]
        for res in results:
            hit = [row for row in res["rows"] if row["kind"] == "uniform" and row["c"] == c]
            if not hit:
                line.append("-")
            elif value.startswith("fraction_cut"):
                line.append(f"{100 * hit[0].get(value, hit[0]['fraction_cut']):.2f}%")
            else:
                line.append(_pct(hit[0][value], hit[0].get(value + "_se")))
        body.append(line)
    return tabulate(body, headers=["c \\ n"] + [str(n) for n in ns], tablefmt=tablefmt)


def plot(results: Union[Dict, List[Dict]], path: str, title: str = "") -> None:
    """Relative variance increase and % cut against c, one line per n. Needs matplotlib
    (optional: pip install matplotlib)."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("the PNG needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if isinstance(results, dict):
        results = [results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for res in results:
        pts = sorted((r["c"], r["relative_increase"], r["relative_increase_se"] or 0, r["fraction_cut"])
                     for r in res["rows"] if r["kind"] == "uniform" and math.isfinite(r["c"]))
        if not pts:
            continue
        c, rel, se, cut = zip(*pts)
        lab = f"n={res['meta'].get('n')}"
        ax1.errorbar(c, [100 * x for x in rel], yerr=[100 * s for s in se], marker="o", capsize=3, label=lab)
        ax2.plot(c, [100 * (1 - x) for x in cut], marker="o", label=lab)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("c")
    ax1.set_ylabel("relative gradient variance increase (%)")
    ax1.axhline(1.0, color="gray", ls=":", lw=1)
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("c")
    ax2.set_ylabel("% of attention entries kept")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# CLI

def load_factory(spec: str) -> Callable:
    """'path/to/file.py:FACTORY' or 'package.module:FACTORY'."""
    if ":" not in spec:
        raise ValueError(f"--model must be FILE.py:FACTORY or module:FACTORY, got {spec!r}")
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py") or os.path.sep in target:
        path = os.path.abspath(target)
        if not os.path.exists(path):
            raise FileNotFoundError(f"--model: no file {path}")
        modname = "_sus_model_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        spec_ = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec_)
        sys.modules[modname] = mod
        sys.path.insert(0, os.path.dirname(path))
        spec_.loader.exec_module(mod)
    else:
        mod = importlib.import_module(target)
    if not hasattr(mod, name):
        raise AttributeError(f"--model: {target} has no {name!r}")
    return getattr(mod, name)


def call_factory(factory: Callable, **kw):
    sig = inspect.signature(factory)
    if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        kw = {k: v for k, v in kw.items() if k in sig.parameters}
    out = factory(**kw)
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise TypeError("the model factory must return (model, get_batch) or (model, get_batch, loss_fn)")
    return out if len(out) == 3 else (out[0], out[1], None)


def _parse_c(s: str) -> float:
    return INF if s.lower() in ("inf", "exact") else float(s)


def build_parser(prog: str = "sus-fx variance") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Relative gradient variance increase of SUS backprop "
                                 "(paper metric) and the fraction of attention entries cut.",
                                 epilog=__doc__.split("CLI (``sus-fx variance``), ")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="FILE.py:FACTORY (see the protocol below)")
    ap.add_argument("--n", type=int, nargs="*", default=[None], help="sequence lengths (passed to the factory)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--c", type=_parse_c, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--batches", type=int, default=16, help="batches for the minibatch variance (a)")
    ap.add_argument("--fixed-batches", type=int, default=4,
                    help="fixed batches for the SUS variance (b); more batches beat more draws: (b) scales with "
                         "each batch's own gradient, so averaging it over batches matches (a)'s average")
    ap.add_argument("--draws", type=int, default=2, help="mask draws per fixed batch")
    ap.add_argument("--per-site", action="store_true", help="also one configuration per attention site")
    ap.add_argument("--engine", choices=["patch", "compile"], default="compile")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--factory-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="extra keyword for the factory (JSON value or string); repeatable")
    ap.add_argument("--json", help="write the results (list, one per n) here")
    ap.add_argument("--png", help="write a plot here (needs matplotlib)")
    ap.add_argument("--groups", action="store_true", help="also print the per-parameter-group table")
    ap.add_argument("--group-by", choices=["layer", "param"], default="layer",
                    help="parameter groups: per attention layer (default) or per parameter tensor")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def parse_factory_args(pairs) -> Dict[str, Any]:
    """--factory-arg KEY=VALUE pairs; VALUE as JSON where it parses, else a string."""
    extra = {}
    for kv in pairs:
        k, _, v = kv.partition("=")
        try:
            extra[k] = json.loads(v)
        except json.JSONDecodeError:
            extra[k] = v
    return extra


def run_cli(a) -> List[Dict]:
    factory = load_factory(a.model)
    extra = parse_factory_args(a.factory_arg)
    results = []
    for n in a.n:
        torch.manual_seed(a.seed)
        model, get_batch, loss_fn = call_factory(factory, n=n, batch_size=a.batch_size, device=a.device, **extra)
        res = measure(model, get_batch, cs=a.c, batches=a.batches, fixed_batches=a.fixed_batches, draws=a.draws,
                      per_site=a.per_site, loss_fn=loss_fn, engine=a.engine, batch_size=a.batch_size, n=n,
                      seed=a.seed, progress=not a.no_progress, label=f"n={n}", group_by=a.group_by)
        results.append(res)
    return results


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    a = build_parser().parse_args(argv)
    results = run_cli(a)
    print(format_table(results, groups=a.groups))
    if len(results) > 1 or results[0]["meta"]["n"] is not None:
        print("\nrelative variance increase, c x n:")
        print(table_grid(results))
        print("\n% of attention entries cut (of the unmasked entries), c x n:")
        print(table_grid(results, "fraction_cut"))
        print("\n% cut of all n x n entries (masked ones included; the paper's c/n view), c x n:")
        print(table_grid(results, "fraction_cut_full"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(jsonable(results), f, indent=1)
    if a.png:
        plot(results, a.png)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
