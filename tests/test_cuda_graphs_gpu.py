"""backend="sus" under CUDA graphs (torch.compile mode="reduce-overhead"), issue 6.

Skipped without CUDA (CI); on a GPU machine:
    python3 -m pytest -q tests/test_cuda_graphs_gpu.py

How mode= reaches the backend: torch.compile wraps a non-Inductor backend in
torch._TorchCompileWrapper, which calls it as backend(gm, example_inputs, mode=..., options=...)
(only the non-empty ones; torch.compile refuses mode= and options= together). SusBackend maps
mode through torch._inductor.list_mode_options ("reduce-overhead" -> {"triton.cudagraphs": True})
into compile_fx's config_patches, which cover the lazily compiled backward too. So:
    torch.compile(m, backend="sus", mode="reduce-overhead")                        # c = 32
    torch.compile(m, backend="sus", options={"c": 4, "triton.cudagraphs": True})   # same, another c
    torch.compile(m, backend=sus_fx.make_backend(c=4, mode="reduce-overhead"))

What CUDA graphs do with the RNG: sus::attention_forward draws its seeds with torch.randint on
the device's default CUDA generator. A capture registers that generator; every replay reads the
generator's current seed and philox offset into the graph (replay prologue) and advances the
offset by the graph's total draw. So each replay draws fresh seeds (fresh masks) without any
host work, and torch.manual_seed(s) before a replay reproduces that replay's draws. The Triton
backward reads the sampling seed on the device (no host sync). Expected: (i) gradients differ
between replays, (ii) their mean converges to the exact gradient like 1/sqrt(replays), (iii) the
forward equals eager, (iv) same manual_seed -> the same masks (gradients equal up to the float
atomics of the dK/dV accumulation, which are not bitwise deterministic).

Paths that read a seed on the host (int(seed[...]): the reference forward/backward used for
dropout_p > 0 on CUDA; the deterministic-mode backward reads cnt.max().item()) cannot be
captured. Each runs in a subprocess (a failed capture can leave the CUDA context unusable): it
must either work with fresh randomness per replay or fail with an error, never silently replay
frozen masks; the test prints which.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, L, DIM, HEADS = 2, 256, 64, 2


def _ensure_sus_backend():
    from torch._dynamo.backends.registry import lookup_backend, register_backend
    try:
        lookup_backend("sus")
    except Exception:
        from sus_fx.backend import sus_backend
        register_backend(compiler_fn=sus_backend, name="sus")


class Attn(nn.Module):
    def __init__(self, dropout=0.0):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        self.dropout = dropout

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


def _inputs():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(B, L, DIM, device="cuda", generator=g)
    w = torch.randn(B, L, DIM, device="cuda", generator=g)   # loss = <out, w>: the upstream grad is w
    return x, w


def _step(f, model, x, w):
    torch.compiler.cudagraph_mark_step_begin()
    model.zero_grad(set_to_none=True)
    out = f(x)
    (out * w).sum().backward()
    # clone at once: cudagraph-owned outputs are overwritten by the next replay
    return out.detach().clone(), torch.cat([p.grad.detach().reshape(-1).clone() for p in model.parameters()])


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def graphed():
    """One model compiled once with backend="sus", mode="reduce-overhead" (c = 32, the default),
    warmed up (cudagraph trees: 1st call eager warm-up, 2nd records, later calls replay), plus
    the exact eager reference (SDPA, fp32) and a replay counter."""
    _ensure_sus_backend()
    from torch._dynamo.utils import counters
    torch.manual_seed(0)
    model = Attn().cuda()
    x, w = _inputs()
    ref_out = model(x)
    (ref_out * w).sum().backward()
    exact = torch.cat([p.grad.detach().reshape(-1).clone() for p in model.parameters()])
    ref_out = ref_out.detach()
    torch._dynamo.reset()
    skips_before = counters["inductor"]["cudagraph_skips"]
    backend_calls = {}
    f = torch.compile(model, backend="sus", mode="reduce-overhead")
    import sus_fx.backend as sb
    real_call = sb.SusBackend.__call__

    def spy(self, gm, example_inputs, **kw):  # record what torch.compile hands the backend
        backend_calls.setdefault("kwargs", []).append(sorted(kw.items()))
        return real_call(self, gm, example_inputs, **kw)

    replays = {"n": 0}
    real_replay = torch.cuda.CUDAGraph.replay

    def counting_replay(self, *a, **k):
        replays["n"] += 1
        return real_replay(self, *a, **k)

    sb.SusBackend.__call__ = spy
    torch.cuda.CUDAGraph.replay = counting_replay
    try:
        for _ in range(3):
            _step(f, model, x, w)
        yield dict(model=model, f=f, x=x, w=w, exact=exact, ref_out=ref_out, replays=replays,
                   skips=counters["inductor"]["cudagraph_skips"] - skips_before, calls=backend_calls)
    finally:
        sb.SusBackend.__call__ = real_call
        torch.cuda.CUDAGraph.replay = real_replay


def test_mode_reaches_the_backend_and_graphs_are_replayed(graphed):
    calls = graphed["calls"].get("kwargs", [])
    assert calls and all(("mode", "reduce-overhead") in kw for kw in calls), calls
    assert graphed["skips"] == 0, ("Inductor skipped CUDA graphs for a sus graph; rerun with "
                                   "TORCH_LOGS=perf_hints to see why")
    n = graphed["replays"]["n"]
    _step(graphed["f"], graphed["model"], graphed["x"], graphed["w"])
    assert graphed["replays"]["n"] >= n + 2, "forward and backward graphs should both replay"


def test_forward_equals_eager(graphed):
    out, _ = _step(graphed["f"], graphed["model"], graphed["x"], graphed["w"])
    torch.testing.assert_close(out, graphed["ref_out"], rtol=1e-4, atol=1e-5)


def test_replays_draw_fresh_masks_and_their_mean_is_the_exact_gradient(graphed):
    n_before = graphed["replays"]["n"]
    N = 64
    grads = [_step(graphed["f"], graphed["model"], graphed["x"], graphed["w"])[1] for _ in range(N)]
    assert graphed["replays"]["n"] >= n_before + 2 * N   # every step was a replay, not a re-record
    exact = graphed["exact"].double()
    G = torch.stack(grads).double()
    # (i) fresh masks each replay: no two consecutive replays give the same gradient
    assert all(not torch.equal(grads[i], grads[i + 1]) for i in range(N - 1))
    single = ((G - exact) ** 2).sum(1)               # ||g_i - g||^2 per replay
    assert float(single.min()) > 1e-10 * float((exact ** 2).sum())  # SUS noise is really there
    # (ii) unbiased with independent draws: E||mean - g||^2 = E||g_i - g||^2 / N. Allow 3x that
    # (the sum runs over ~16k gradient entries, so the ratio concentrates near 1), plus fp32 noise.
    err_mean = float(((G.mean(0) - exact) ** 2).sum())
    bound = 3.0 * float(single.mean()) / N + (1e-4 ** 2) * float((exact ** 2).sum())
    print(f"rel err one replay {float(single.mean().sqrt() / exact.norm()):.3e}, "
          f"mean of {N}: {err_mean ** 0.5 / float(exact.norm()):.3e}")
    assert err_mean <= bound, (err_mean, bound)


def test_same_manual_seed_replays_the_same_masks(graphed):
    f, model, x, w = graphed["f"], graphed["model"], graphed["x"], graphed["w"]
    res = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        torch.manual_seed(seed)
        res[name] = _step(f, model, x, w)
    (oa, ga), (ob, gb), (oc, gc) = res["a"], res["b"], res["c"]
    assert torch.equal(oa, ob) and torch.equal(oa, oc)       # no dropout: the forward is exact
    # same seed: same masks; only the dK/dV float atomics may reorder (~1e-7 relative)
    assert _rel(ga, gb) < 1e-5, _rel(ga, gb)
    # another seed: other masks, a difference far above the atomics' rounding
    assert _rel(gc, ga) > 1e3 * max(_rel(ga, gb), 1e-9), (_rel(gc, ga), _rel(ga, gb))


# ----------------------------------------------------------------------------------------------
# Paths that read a seed on the host

_CHILD = textwrap.dedent(r"""
    import json, sys, traceback
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    import torch
    from test_cuda_graphs_gpu import Attn, _inputs, _step, _ensure_sus_backend
    import sus_fx.policy
    sus_fx.policy.AUTO_MIN_LENGTH.clear()  # tiny shapes: SUS, not the CUDA default's exact attention
    _ensure_sus_backend()
    case = {case!r}
    torch.manual_seed(0)
    model = Attn(dropout=0.1 if case == "dropout" else 0.0).cuda()
    x, w = _inputs()
    f = torch.compile(model, backend="sus", mode="reduce-overhead")
    if case == "deterministic":
        torch.use_deterministic_algorithms(True)
    replays = [0]
    real = torch.cuda.CUDAGraph.replay
    def counting(self, *a, **k):
        replays[0] += 1
        return real(self, *a, **k)
    torch.cuda.CUDAGraph.replay = counting
    res = dict(case=case, steps=0)
    outs, grads = [], []
    try:
        for i in range(6):
            o, g = _step(f, model, x, w)
            torch.cuda.synchronize()
            outs.append(o); grads.append(g)
            res["steps"] = i + 1
        res["ok"] = True
    except Exception as e:
        res["ok"] = False
        res["error"] = type(e).__name__ + ": " + str(e).strip().splitlines()[0][:300]
        res["where"] = "".join(traceback.format_exception(e)[-3:])[-1500:]
    res["replays"] = replays[0]
    late = list(range(2, len(grads)))   # steps after warm-up and recording
    res["late_grads_all_distinct"] = all(not torch.equal(grads[i], grads[j]) for i in late for j in late if i < j)
    res["late_outs_all_distinct"] = all(not torch.equal(outs[i], outs[j]) for i in late for j in late if i < j)
    res["finite"] = all(bool(torch.isfinite(g).all()) for g in grads)
    print("RESULT " + json.dumps(res))
""")


@pytest.mark.parametrize("case", ["dropout", "deterministic"])
def test_host_sync_paths_work_or_fail_loudly_under_cuda_graphs(case):
    """dropout_p > 0 (CUDA: the reference forward and backward, int(seed[0]) on the host) and
    use_deterministic_algorithms(True) (the Triton backward reads cnt.max().item()) under
    mode="reduce-overhead". Acceptable: an error, or training whose replays draw fresh masks
    (dropout: outputs and gradients differ between replays; deterministic: gradients differ).
    Not acceptable: replays that silently repeat the captured masks. The outcome is printed."""
    code = _CHILD.format(repo=REPO, tests=os.path.join(REPO, "tests"), case=case)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # else deterministic cuBLAS refuses first
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        # the child died outright (e.g. a CUDA error that killed the process): a loud failure
        print(f"[{case}] child exit {proc.returncode}; stderr tail:\n{proc.stderr[-3000:]}")
        assert proc.returncode != 0
        return
    res = json.loads(lines[-1][len("RESULT "):])
    print(f"[{case}] outcome: {json.dumps(res, indent=1)}")
    if res["ok"]:
        assert res["finite"]
        assert res["replays"] > 0, "no CUDA graph was replayed: the case did not test graphs"
        assert res["late_grads_all_distinct"], "replays repeated the captured masks"
        if case == "dropout":
            assert res["late_outs_all_distinct"], "replays repeated the captured dropout mask"
    else:
        assert res["error"], res
