"""The `sus` torch.compile backend.

    torch.compile(model, backend="sus")                          # entry point; no import needed
    torch.compile(model, backend="sus", options={"c": 16})
    torch.compile(model, backend="sus", options={"policy": "policy.toml", "report": True})
    torch.compile(model, backend=sus_fx.make_backend(c=16, policy="policy.toml", strict=True))

Options (``options={...}`` or `make_backend` arguments):
    c        number > 0 or "exact": SUS parameter for sites no policy rule matches
    min_length  key length below which an attention site is left as it was (exact): an int >= 0
             or "auto" (the default: 8192 on CUDA, 0 on CPU; see sus_fx.policy, "Short sequences")
    policy   path of a TOML policy file (see sus_fx.policy), a Policy, or False for none;
             default: the file named by $SUS_FX_POLICY, if set
    report   True: log the report of each compiled graph (logger "sus_fx", shown on stderr when
             logging is not configured); or a callable that receives each Report
    strict   True: a failure of the passes raises instead of falling back to plain Inductor
    any other key: a torch._inductor.config setting, as with backend="inductor"
``mode=`` ("reduce-overhead", "max-autotune", ...) maps to Inductor's settings for that mode.
Precedence of c: first matching policy rule > option c > the policy file's `c` > 32.
Precedence of min_length: option > the policy file's `min_length` > "auto".

Pipeline, per Dynamo graph:
    1. passes.rewrite_attention(gm, policy.choose): each matched attention subgraph becomes
       torch.ops.sus.attention (a pristine copy of the graph is kept first);
    2. torch._inductor.compile_fx.compile_fx(gm, example_inputs, config_patches=...).
If step 1 raises, a SusFallbackWarning says why and the untouched copy is compiled instead
(strict=True re-raises). If Inductor fails on a rewritten graph, the same fallback applies.

Inductor's own fused-attention rewrites (torch/_inductor/fx_passes/fuse_attention.py, the
`_sfdp_pattern_*` replacements to SDPA) are kept out of our compiles: the passes own attention, and
those patterns are unsound (pytorch issue 196468: a softmax over a non-last dim is rewritten as if
it were over the last one; reproduced on torch 2.13 CPU and 2.11 CPU/CUDA). They live in the
joint-graph pattern pass, which runs for training and inference alike; torch has no switch for
them alone. sus_fx/inductor_guard.py takes them out of that pass's pattern table for the duration
of the pass and puts them back after (two custom joint-graph passes in compile_fx's
`config_patches`, scoped to this compile); every other joint-graph rewrite keeps running. (Until
stop 14 the whole pass was off, `use_joint_graph_passes=False`, which cost a GPT-124M an extra
fp32 [tokens, vocab] buffer: +1.5 GiB at 8k tokens on the H200.) As a guard, a compile in which
Inductor still reports an attention fusion raises a warning.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, Union

import torch

from . import inductor_guard, post_grad
from .inspection import Report, SusFallbackWarning, rewrite_graph
from .policy import Policy, PolicyLike, parse_c, parse_min_length

__all__ = ["sus_backend", "make_backend", "SusBackend", "SusFallbackWarning", "INDUCTOR_PATCHES"]

log = logging.getLogger("sus_fx")

SUS_OPTIONS = ("c", "min_length", "policy", "report", "strict")

# Inductor settings the sus backend always applies within its own compile (see the module doc).
# The post-grad pass: compiled graphs call the forward op without its autograd layer (post_grad.py).
INDUCTOR_PATCHES: Dict[str, Any] = {"joint_custom_pre_pass": inductor_guard.HIDE,
                                    "joint_custom_post_pass": inductor_guard.RESTORE,
                                    "post_grad_custom_post_pass": post_grad.ForwardWithoutAutograd()}

ReportTarget = Union[bool, Callable[[Report], Any]]


def _inductor_config_names() -> Dict[str, Any]:
    from torch._inductor import config
    return config.get_config_copy()


def _mode_patches(mode: Optional[str]) -> Dict[str, Any]:
    if not mode or mode == "default":
        return {}
    from torch._inductor import list_mode_options
    try:
        return dict(list_mode_options(mode))
    except RuntimeError as e:
        raise ValueError(f"sus backend: {e}") from None


class _Settings:
    """c / min_length / policy / report / strict plus Inductor config patches."""

    def __init__(self, c=None, policy: PolicyLike = None, report: ReportTarget = False, strict: bool = False,
                 inductor: Optional[Dict[str, Any]] = None, min_length: Optional[Union[int, str]] = None):
        self.c = c
        self.min_length = min_length  # None: the policy's; "auto": the device's default
        self.policy = policy
        self.report = report
        self.strict = strict
        self.inductor: Dict[str, Any] = dict(inductor or {})

    def copy(self) -> "_Settings":
        return _Settings(self.c, self.policy, self.report, self.strict, self.inductor, self.min_length)

    def apply(self, mode: Optional[str] = None, options: Optional[Dict[str, Any]] = None) -> "_Settings":
        """A copy updated with torch.compile's mode= and options=."""
        new = self.copy()
        new.inductor.update(_mode_patches(mode))
        if options is None:
            return new
        if not isinstance(options, dict):
            raise TypeError(f"sus backend: options must be a dict, got {type(options).__name__}")
        known = None
        for key, value in options.items():
            if key == "c":
                new.c = None if value is None else parse_c(value, "sus backend: option 'c'")
            elif key == "min_length":
                if value is not None and parse_min_length(value, "sus backend: option 'min_length'") is None:
                    value = "auto"
                new.min_length = value
            elif key == "policy":
                new.policy = value
            elif key == "report":
                if not (isinstance(value, bool) or callable(value)):
                    raise ValueError(f"sus backend: option 'report' must be True/False or a callable, got {value!r}")
                new.report = value
            elif key == "strict":
                if not isinstance(value, bool):
                    raise ValueError(f"sus backend: option 'strict' must be True or False, got {value!r}")
                new.strict = value
            else:
                known = known if known is not None else _inductor_config_names()
                name = key.replace("-", "_")
                if name not in known:
                    raise ValueError(
                        f"sus backend: unknown option {key!r}. sus options: {', '.join(SUS_OPTIONS)}; any other "
                        "key must be a torch._inductor.config setting (see torch._inductor.list_options())")
                new.inductor[name] = value
        return new

    def inductor_patches(self) -> Dict[str, Any]:
        patches = dict(self.inductor)
        # a post-grad pass set by the user (option or Inductor config) is chained, not replaced
        from torch._inductor import config as inductor_config
        user_post_grad = patches.pop("post_grad_custom_post_pass", inductor_config.post_grad_custom_post_pass)
        for key, value in INDUCTOR_PATCHES.items():
            if key in patches and patches[key] != value:
                warnings.warn(f"sus backend: ignoring Inductor setting {key}={patches[key]!r}: the sus backend sets "
                              f"{key}={value!r} so that Inductor's own attention patterns cannot fire "
                              "(pytorch issue 196468)", stacklevel=3)
            patches[key] = value
        if user_post_grad is not None:  # runs after ours
            patches["post_grad_custom_post_pass"] = post_grad.ForwardWithoutAutograd(then=user_post_grad)
        return patches


def _ensure_visible() -> None:
    """report=True must reach the user even when logging is not configured."""
    if not log.isEnabledFor(logging.INFO):
        log.setLevel(logging.INFO)
    if not log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)


def _emit(report: Report, target: ReportTarget, gm: torch.fx.GraphModule) -> None:
    if callable(target) and not isinstance(target, bool):
        target(report)
        return
    _ensure_visible()
    cid = getattr(gm, "meta", {}).get("dynamo_compile_id")
    head = f"sus-fx report, graph {report.graphs[0].index}" + (f" (compile id {cid})" if cid is not None else "")
    log.info("%s\n%s", head, report)


def _fusion_count() -> int:
    try:
        from torch._dynamo.utils import counters
        return int(counters["inductor"]["fuse_attention"])
    except Exception:  # pragma: no cover - counters are an internal detail
        return 0


def _compile_fx(gm, example_inputs, patches):
    from torch._inductor.compile_fx import compile_fx
    before = _fusion_count()
    try:
        compiled = compile_fx(gm, example_inputs, config_patches=patches)
    finally:
        inductor_guard.restore()  # (a compile that failed between the two guard passes)
    if _fusion_count() > before:
        warnings.warn("sus backend: Inductor reports a fused-attention rewrite in a graph compiled by the sus "
                      "backend although its fused-attention patterns are hidden; this torch version may have "
                      "moved them (see pytorch issue 196468). Check the results against eager.", stacklevel=3)
    return compiled


def _needs_stats_variant(example_inputs) -> bool:
    """On CUDA the traced backward launches the kernels itself and has no host-side hook for
    sus_fx.stats(): such graphs are compiled in two variants (see _StatsAwareGraph)."""
    return any(isinstance(t, torch.Tensor) and t.device.type == "cuda" for t in example_inputs)


class _StatsAwareGraph:
    """A compiled graph whose backward is specialized on whether sus_fx.stats() was recording when
    it was traced (ops._triton_op_takes). A call made in the other state compiles, once, the
    variant for that state from a pristine copy of the rewritten graph, with AOTAutograd's cache
    off (its key is the graph before tracing, the same for both variants)."""

    def __init__(self, pristine, patches, first, first_recording: bool):
        self._pristine = pristine
        self._patches = patches
        self._variants = {first_recording: first}

    def __call__(self, *args):
        from .stats import recording
        state = recording()
        fn = self._variants.get(state)
        if fn is None:
            from .inspection import clone_graph_module
            import torch._functorch.config as functorch_config
            with functorch_config.patch(enable_autograd_cache=False):
                fn = self._variants[state] = _compile_fx(clone_graph_module(self._pristine), list(args),
                                                         self._patches)
        return fn(*args)


def _register_opaque_kernel_ops(example_inputs) -> None:
    """A compiled CUDA backward may call sus::union_sm90, an opaque op registered when its module is
    imported. A backward loaded from Inductor's caches in a fresh process never runs the Python that
    imports it, so register it here, before any compiled graph runs."""
    if any(isinstance(t, torch.Tensor) and t.device.type == "cuda" for t in example_inputs):
        from .kernels import sus_bwd
        sus_bwd._sm90_union()


def _compile_rewritten(gm, example_inputs, patches):
    _register_opaque_kernel_ops(example_inputs)
    if not _needs_stats_variant(example_inputs):
        return _compile_fx(gm, example_inputs, patches)
    from .stats import recording
    from .inspection import clone_graph_module
    import torch._functorch.config as functorch_config
    pristine = clone_graph_module(gm)
    state = recording()
    if state:
        with functorch_config.patch(enable_autograd_cache=False):
            first = _compile_fx(gm, example_inputs, patches)
    else:
        first = _compile_fx(gm, example_inputs, patches)
    return _StatsAwareGraph(pristine, patches, first, state)


class SusBackend:
    """A torch.compile backend callable: `torch.compile(model, backend=SusBackend(...))`.

    Built by `sus_fx.make_backend`. `reports` collects the Report of every graph it compiled
    (when keep_reports is True)."""

    def __init__(self, c=None, policy: PolicyLike = None, report: ReportTarget = False, strict: bool = False,
                 mode: Optional[str] = None, options: Optional[Dict[str, Any]] = None, keep_reports: bool = True,
                 min_length: Optional[Union[int, str]] = None):
        settings = _Settings(None if c is None else parse_c(c, "sus backend: c"), policy, False, False)
        settings = settings.apply(mode, {"report": report, "strict": strict, **(options or {}),
                                         **({} if min_length is None else {"min_length": min_length})})
        if isinstance(settings.policy, (str, os.PathLike)) and settings.policy != "":
            # read and validate the file now: a bad policy fails here, not mid-compile
            settings.policy = Policy.resolve(settings.policy)
        self._settings = settings
        self.keep_reports = keep_reports
        self.reports: List[Report] = []
        self._graphs = 0
        self.__name__ = "sus"

    def __call__(self, gm: torch.fx.GraphModule, example_inputs, **kwargs):
        mode = kwargs.pop("mode", None)
        options = kwargs.pop("options", None)
        if kwargs:
            warnings.warn(f"sus backend: ignoring unexpected arguments {sorted(kwargs)}", stacklevel=2)
        settings = self._settings.apply(mode, options)
        policy = Policy.resolve(settings.policy, settings.c, settings.min_length)  # fresh per graph: its own hit counts
        index = self._graphs
        self._graphs += 1

        gm, record, backup = rewrite_graph(gm, policy, strict=settings.strict, index=index)
        report = Report([record], policy)
        if self.keep_reports:
            self.reports.append(report)
        if settings.report:
            _emit(report, settings.report, gm)

        patches = settings.inductor_patches()
        if record.error is not None or not record.sites:
            return _compile_fx(gm, example_inputs, patches)
        if backup is None:  # strict: no fallback graph, a failure is raised
            return _compile_rewritten(gm, example_inputs, patches)
        try:
            return _compile_rewritten(gm, example_inputs, patches)
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
            warnings.warn(f"sus-fx: Inductor failed on graph {index} after the attention rewrite ({why}); "
                          "compiling the original graph with plain Inductor, without SUS. "
                          "Pass options={'strict': True} to make this an error.", SusFallbackWarning, stacklevel=2)
            record.error = f"Inductor failed on the rewritten graph: {why}"
            return _compile_fx(backup, example_inputs, patches)

    def __repr__(self) -> str:
        s = self._settings
        return (f"SusBackend(c={s.c}, min_length={s.min_length!r}, policy={s.policy!r}, report={s.report!r}, "
                f"strict={s.strict})")


def make_backend(c=None, policy: PolicyLike = None, report: ReportTarget = False, strict: bool = False,
                 mode: Optional[str] = None, options: Optional[Dict[str, Any]] = None,
                 min_length: Optional[Union[int, str]] = None) -> SusBackend:
    """A `sus` backend with its own settings:

        torch.compile(model, backend=sus_fx.make_backend(c=16, policy="policy.toml", report=True))

    c: default SUS parameter (number > 0, "exact" or inf); policy rules take precedence.
    min_length: key length below which a site is left exact (int >= 0, or "auto": 8192 on CUDA,
        0 on CPU); replaces the policy file's.
    policy: policy file path or Policy (validated now); None uses $SUS_FX_POLICY; False: none.
    report: True logs each graph's report; a callable receives each Report.
    strict: re-raise a failure of the passes instead of compiling that graph without SUS.
    mode / options: Inductor mode and config settings, as for backend="inductor".
    The returned object keeps each graph's Report in `.reports`.
    """
    return SusBackend(c=c, policy=policy, report=report, strict=strict, mode=mode, options=options,
                      min_length=min_length)


_default = SusBackend(keep_reports=False)


def sus_backend(gm: torch.fx.GraphModule, example_inputs, **kwargs):
    """The registered `sus` backend (entry point group torch_dynamo_backends)."""
    return _default(gm, example_inputs, **kwargs)
