"""SUS attention against SDPA (cuDNN, flash, efficient) and FlexAttention on one GPU.

    python3 benchmarks/attention.py --out DIR [--n 1024,2048,...] [--d 64,128] [--causal 1,0]
                                    [--c 8,16,32,64] [--flex-n 4096,16384] [--tune] [--graph]
                                    [--compiled-n 2048,16384] [--extra-d 80,96,256 --extra-n 16384]
                                    [--heads 12] [--layout packed] [--qscale 3] [--rounds 3]

bf16, B=1; H=32 for head dim 64, H=16 for head dim 128 (--heads sets it). --layout packed makes q, k
and v strided views of one [B, L, 3, H, D] tensor, as a model's fused qkv projection does, and
--qscale > 1 sharpens the attention, as training does (GPT-shaped rows: --d 64 --heads 12 --layout
packed --qscale 3). For each case: forward, backward (on a
retained graph), forward+backward (median ms of triton.testing.do_bench) and the peak memory of one
forward+backward above the inputs; --rounds R alternates the methods over R rounds and reports
medians (the card's clock drifts over a run). Writes DIR/attention.json, DIR/attention.md and
DIR/attention.png (log-log time against n), prints the table last.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import sus_fx  # noqa: E402
from sus_fx.kernels import dispatch, sus_bwd  # noqa: E402

def make_inputs(H, n, D, g, layout="bhld", qscale=1.0, dev="cuda"):
    """q, k, v (leaves that require grad) and dO, bf16, [1, H, n, D]; "packed": q, k, v are strided
    views of one [1, n, 3, H, D] tensor (row stride 3 H D), transposed to [1, H, n, D]."""
    if layout == "packed":
        x = torch.randn(1, n, 3, H, D, device=dev, generator=g, dtype=torch.bfloat16)
        q, k, v = (x[:, :, i].transpose(1, 2).detach() for i in range(3))  # views: strides kept
    else:
        q, k, v = (torch.randn(1, H, n, D, device=dev, generator=g, dtype=torch.bfloat16) for _ in range(3))
    if qscale != 1.0:
        q.mul_(qscale)
    do = torch.randn(1, H, n, D, device=dev, generator=g, dtype=torch.bfloat16)
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), do


BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def bench(fn, grad_to_none=None, budget_ms=150):
    return triton.testing.do_bench(fn, warmup=25, rep=budget_ms, grad_to_none=grad_to_none, return_mode="median")


def measure(make_out, q, k, v, do, budget_ms=150):
    """fwd, bwd, fwd+bwd ms and peak MB for a callable (q, k, v) -> out."""
    ins = [q, k, v]
    with torch.no_grad():
        fwd = bench(lambda: make_out(q, k, v), budget_ms=budget_ms)
    out = make_out(q, k, v)
    bwd = bench(lambda: out.backward(do, retain_graph=True), grad_to_none=ins, budget_ms=budget_ms)
    del out

    def fb():
        make_out(q, k, v).backward(do)

    fwdbwd = bench(fb, grad_to_none=ins, budget_ms=budget_ms)
    for t in ins:
        t.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fb()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    for t in ins:
        t.grad = None
    return dict(fwd=fwd, bwd=bwd, fwdbwd=fwdbwd, peak_mb=peak)


def measure_rounds(methods, q, k, v, do, rounds, graph, case):
    """[(name, results)] for each method that ran: measure() (and graph_fwdbwd) in `rounds` rounds
    that alternate the methods (A B A B ..., not A A B B), each number the median over the rounds.
    The same cuDNN forward measured 29.4 ms as the baseline and 30.7 ms minutes later inside the SUS
    row (64k, H200, stop 19): the card's clock drifts over a run, and a sequential order charges the
    drift to whichever method comes last."""
    runs = {name: [] for name, _ in methods}
    for _ in range(rounds):
        for name, fn in methods:
            if runs[name] is None:
                continue
            try:
                r = measure(fn, q, k, v, do, budget_ms=max(50, 150 // rounds))
                if graph and name != "flex":
                    r["fwdbwd_graph"] = graph_fwdbwd(fn, q, k, v, do)
            except Exception as e:  # a backend that refuses a shape
                print(f"  {name} {case}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                runs[name] = None
                continue
            runs[name].append(r)
    out = []
    for name, _ in methods:
        rs = runs[name]
        if not rs:
            continue
        r = {key: statistics.median(x[key] for x in rs) for key in ("fwd", "bwd", "fwdbwd")}
        r["peak_mb"] = max(x["peak_mb"] for x in rs)
        gs = [x["fwdbwd_graph"] for x in rs if x.get("fwdbwd_graph")]
        if gs:
            r["fwdbwd_graph"] = statistics.median(gs)
        if rounds > 1:
            r["rounds"] = len(rs)
            r["fwdbwd_rounds"] = [round(x["fwdbwd"], 4) for x in rs]
        out.append((name, r))
    return out


def graph_fwdbwd(make_out, q, k, v, do):
    """forward+backward replayed from a CUDA graph: the GPU time alone, no host overhead (what a
    compiled model with mode="reduce-overhead" sees). None if the method cannot be captured."""
    ins = (q, k, v)
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):  # warm up outside the capture (lazy init, autotune caches)
                torch.autograd.grad(make_out(q, k, v), ins, do)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            grads = torch.autograd.grad(make_out(q, k, v), ins, do)
        g.replay()
        torch.cuda.synchronize()
        t = bench(g.replay)
        del grads, g
        return t
    except Exception as e:
        print(f"    graph capture failed: {type(e).__name__}: {str(e)[:160]}", flush=True)
        torch.cuda.synchronize()
        return None


def compiled_fwdbwd(make_out, q, k, v, do):
    """forward+backward of torch.compile(fn) (Inductor; SUS's backward traced into its kernels)."""
    import torch._dynamo
    torch._dynamo.reset()
    cf = torch.compile(make_out, fullgraph=True, dynamic=False)
    ins = (q, k, v)
    t0 = time.time()
    torch.autograd.grad(cf(q, k, v), ins, do)
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    return bench(lambda: torch.autograd.grad(cf(q, k, v), ins, do)), compile_s


def sdpa_fn(backend, causal):
    def f(q, k, v):
        with sdpa_kernel(BACKENDS[backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return f


def sus_fn(c, causal):
    return lambda q, k, v: sus_fx.sus_attention(q, k, v, is_causal=causal, c=c)


_flex_cache = {}


def flex_fn(causal, n, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if "fa" not in _flex_cache:
        _flex_cache["fa"] = torch.compile(flex_attention)
    fa = _flex_cache["fa"]
    bm = None
    if causal:
        bm = create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, n, n, device=device)
    return lambda q, k, v: fa(q, k, v, block_mask=bm)


def union_stats(q, k, v, do, causal, c):
    s = 1 / math.sqrt(q.shape[-1])
    o, lse = dispatch.forward(q, k, v, None, causal, s, 0.0)
    sus_bwd._OVERRIDE["debug"] = "union_only"
    try:
        sus_bwd.sus_backward(do, q, k, v, None, o, lse, causal, s, c, 1)
        cnt = sus_bwd._DEBUG["cnt"].float()
        U = sus_bwd._DEBUG["U_cap"]
        ua = bench(lambda: sus_bwd.sus_backward(do, q, k, v, None, o, lse, causal, s, c, 1))
    finally:
        del sus_bwd._OVERRIDE["debug"]
    full = bench(lambda: sus_bwd.sus_backward(do, q, k, v, None, o, lse, causal, s, c, 1))
    return dict(union_mean_over_c=float(cnt.mean()) / c, union_max=float(cnt.max()), U_cap=U,
                overflow_frac=float((cnt > U).float().mean()), phase_a_ms=ua, phase_ab_ms=full,
                phase_b_ms=full - ua)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--n", default="1024,2048,4096,8192,16384,32768,65536")
    ap.add_argument("--d", default="128,64")
    ap.add_argument("--causal", default="1,0")
    ap.add_argument("--c", default="8,16,32,64")
    ap.add_argument("--backends", default="cudnn,flash,efficient")
    ap.add_argument("--flex-n", default="")
    ap.add_argument("--max-dense-n", type=int, default=65536, help="largest n for flash/efficient")
    ap.add_argument("--noncausal-max-n", type=int, default=65536)
    ap.add_argument("--tune", default="", help="semicolon-separated config overrides k=v,k=v to time (c=32)")
    ap.add_argument("--stats", action="store_true")
    ap.add_argument("--rounds", type=int, default=1, help="measure the methods in this many alternating "
                    "rounds (A B A B ...) and report medians: drift of the card's clock then falls on all alike")
    ap.add_argument("--graph", action="store_true", help="also time forward+backward replayed from a CUDA graph")
    ap.add_argument("--compiled-n", default="", help="n values (causal, D=128 case) at which to also time "
                    "torch.compile'd cudnn SDPA and SUS c=32 forward+backward")
    ap.add_argument("--extra-d", default="", help="more head dims, causal, at --extra-n only (c=32)")
    ap.add_argument("--extra-n", default="16384")
    ap.add_argument("--heads", type=int, default=0, help="heads (default: 32 at head dim <= 64, else 16)")
    ap.add_argument("--layout", default="bhld", choices=("bhld", "packed"),
                    help="packed: q, k, v strided views of one [B, L, 3, H, D] tensor")
    ap.add_argument("--qscale", type=float, default=1.0, help="q scaled by this (peakier attention)")
    ap.add_argument("--pick", default="", help="semicolon-separated configs; per head dim, the fastest SUS "
                    "backward at n=16384 causal c=32 is used for the whole run")
    args = ap.parse_args()
    dev = "cuda"
    meta = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                cuda=torch.version.cuda, dtype="bfloat16", B=1, rounds=args.rounds, layout=args.layout, qscale=args.qscale, time=time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                       time.gmtime()))
    print(meta, flush=True)
    rows = []
    picked = {}
    if args.pick:
        for D in [int(x) for x in args.d.split(",")]:
            picked[D] = pick(args.pick, D, rows, heads=args.heads, layout=args.layout, qscale=args.qscale)
        meta["configs"] = {str(k): v for k, v in picked.items()}
        print("picked", picked, flush=True)
    ns = [int(x) for x in args.n.split(",") if x]
    flex_ns = {int(x) for x in args.flex_n.split(",") if x}
    compiled_ns = {int(x) for x in args.compiled_n.split(",") if x}
    plan = [(D, [bool(int(x)) for x in args.causal.split(",")], ns, args.c) for D in [int(x) for x in args.d.split(",")]]
    plan += [(int(D), [True], [int(x) for x in args.extra_n.split(",")], "32") for D in args.extra_d.split(",") if D]
    for D, causals, ns, cs in plan:
        H = args.heads or (32 if D <= 64 else 16)
        sus_bwd._OVERRIDE.clear()
        sus_bwd._OVERRIDE.update(picked.get(D, {}))
        for causal in causals:
            for n in ns:
                if not causal and n > args.noncausal_max_n:
                    continue
                g = torch.Generator(device=dev).manual_seed(n)
                q, k, v, do = make_inputs(H, n, D, g, args.layout, args.qscale, dev)
                case = dict(n=n, D=D, H=H, causal=causal)
                methods = [(b, sdpa_fn(b, causal)) for b in args.backends.split(",") if b
                           and (b == "cudnn" or n <= args.max_dense_n)]
                if n in flex_ns:
                    methods.append(("flex", flex_fn(causal, n, dev)))
                methods += [(f"sus c={c:g}", sus_fn(float(c), causal)) for c in map(float, cs.split(","))]
                for name, r in measure_rounds(methods, q, k, v, do, args.rounds, args.graph, case):
                    row = dict(case, method=name, **r)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                if n in compiled_ns and causal and D == 128:
                    for name, fn in (("compiled cudnn", sdpa_fn("cudnn", causal)), ("compiled sus c=32", sus_fn(32.0, causal))):
                        try:
                            t, cs_ = compiled_fwdbwd(fn, q, k, v, do)
                            row = dict(case, method=name, fwdbwd_compiled=t, compile_s=cs_)
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                        except Exception as e:
                            print(f"  {name} n={n}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                if args.stats:
                    for c in map(float, args.c.split(",")):
                        st = union_stats(q.detach(), k.detach(), v.detach(), do, causal, c)
                        print(json.dumps(dict(case, c=c, **st)), flush=True)
                        rows.append(dict(case, method=f"stats c={c:g}", **st))
                if args.tune:
                    s = 1 / math.sqrt(D)
                    o, lse = dispatch.forward(q.detach(), k.detach(), v.detach(), None, causal, s, 0.0)
                    for spec in args.tune.split(";"):
                        ov = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in spec.split(",") if kv}
                        sus_bwd._OVERRIDE.clear()
                        sus_bwd._OVERRIDE.update(ov)
                        try:
                            for c in map(float, args.c.split(",")):
                                fb = lambda: sus_bwd.sus_backward(do, q.detach(), k.detach(), v.detach(), None, o, lse,
                                                                  causal, s, c, 1)
                                t_ab = bench(fb)
                                sus_bwd._OVERRIDE["debug"] = "union_only"
                                t_a = bench(fb)
                                del sus_bwd._OVERRIDE["debug"]
                                row = dict(case, method=f"tune {spec} c={c:g}", bwd=t_ab, phase_a=t_a, phase_b=t_ab - t_a)
                                rows.append(row)
                                print(json.dumps(row), flush=True)
                        except Exception as e:
                            print(f"  tune {spec}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                        finally:
                            sus_bwd._OVERRIDE.clear()
                            sus_bwd._OVERRIDE.update(picked.get(D, {}))
                del q, k, v, do
                torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "attention.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    table = make_table(rows, meta)
    with open(os.path.join(args.out, "attention.md"), "w") as f:
        f.write(table)
    try:
        plot(rows, os.path.join(args.out, "attention.png"), meta)
    except Exception as e:
        print("plot failed:", e)
    print(table)


def pick(specs, D, rows, n=16384, heads=0, layout="bhld", qscale=1.0):
    H = heads or (16 if D == 128 else 32)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (t.detach() for t in make_inputs(H, n, D, g, layout, qscale))
    s = 1 / math.sqrt(D)
    o, lse = dispatch.forward(q, k, v, None, True, s, 0.0)
    best = None
    for spec in specs.split(";"):
        ov = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in spec.split(",") if kv}
        sus_bwd._OVERRIDE.clear()
        sus_bwd._OVERRIDE.update(ov)
        try:
            fb = lambda: sus_bwd.sus_backward(do, q, k, v, None, o, lse, True, s, 32.0, 1)
            t_ab = bench(fb)
            sus_bwd._OVERRIDE["debug"] = "union_only"
            t_a = bench(fb)
        except Exception as e:
            print(f"  pick {spec}: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        finally:
            sus_bwd._OVERRIDE.clear()
        row = dict(n=n, D=D, H=H, causal=True, method=f"tune {spec} c=32", bwd=t_ab, phase_a=t_a, phase_b=t_ab - t_a)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if best is None or t_ab < best[0]:
            best = (t_ab, ov)
    del q, k, v, do, o, lse
    torch.cuda.empty_cache()
    return best[1] if best else {}


def make_table(rows, meta):
    rounds = meta.get("rounds", 1)
    how = f", medians over {rounds} alternating rounds" if rounds > 1 else ""
    out = [f"{meta['card']}, torch {meta['torch']}, triton {meta['triton']}, bf16, B=1, median ms (do_bench{how})\n"]
    out.append("| D | H | causal | n | method | fwd | bwd | fwd+bwd | peak MB | f+b speedup vs best SDPA | bwd vs cuDNN bwd | bwd/fwd |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    cases = sorted({(r["D"], r["H"], r["causal"], r["n"]) for r in rows}, key=lambda t: (-t[0], not t[2], t[3]))
    for D, H, causal, n in cases:
        rs = [r for r in rows if (r["D"], r["H"], r["causal"], r["n"]) == (D, H, causal, n) and "fwdbwd" in r]
        dense = [r for r in rs if not r["method"].startswith("sus")]
        best = min((r["fwdbwd"] for r in dense if r["method"] in BACKENDS), default=float("nan"))
        cud = next((r["bwd"] for r in rs if r["method"] == "cudnn"), float("nan"))
        for r in rs:
            out.append(f"| {D} | {H} | {int(causal)} | {n} | {r['method']} | {r['fwd']:.3f} | {r['bwd']:.3f} | "
                       f"{r['fwdbwd']:.3f} | {r['peak_mb']:.0f} | {best / r['fwdbwd']:.2f}x | {cud / r['bwd']:.2f}x | "
                       f"{r['bwd'] / r['fwd']:.2f} |")
    gr = [r for r in rows if r.get("fwdbwd_graph") or "fwdbwd_compiled" in r]
    if gr:
        out.append("")
        out.append("Host overhead removed: forward+backward replayed from a CUDA graph (GPU time only), and "
                   "torch.compile'd (Inductor launches SUS's traced kernels):")
        out.append("")
        out.append("| D | causal | n | method | f+b eager | f+b CUDA graph | speedup vs best SDPA (graph) | f+b compiled |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in gr:
            same = [x for x in rows if (x["D"], x["causal"], x["n"]) == (r["D"], r["causal"], r["n"])]
            bestg = min((x["fwdbwd_graph"] for x in same if x["method"] in BACKENDS and x.get("fwdbwd_graph")),
                        default=float("nan"))
            g = r.get("fwdbwd_graph")
            eager = f"{r['fwdbwd']:.3f}" if "fwdbwd" in r else "-"
            graph = f"{g:.3f} | {bestg / g:.2f}x" if g else "- | -"
            comp = f"{r['fwdbwd_compiled']:.3f} (compile {r['compile_s']:.0f} s)" if "fwdbwd_compiled" in r else "-"
            out.append(f"| {r['D']} | {int(r['causal'])} | {r['n']} | {r['method']} | {eager} | {graph} | {comp} |")
    st = [r for r in rows if r["method"].startswith("stats") or r["method"].startswith("tune")]
    if st:
        out.append("")
        out.append("| D | causal | n | what | numbers |")
        out.append("|---|---|---|---|---|")
        for r in st:
            nums = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                             if k not in ("n", "D", "H", "causal", "method"))
            out.append(f"| {r['D']} | {int(r['causal'])} | {r['n']} | {r['method']} | {nums} |")
    return "\n".join(out) + "\n"


def plot(rows, path, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    combos = sorted({(r["D"], r["causal"]) for r in rows if "fwdbwd" in r}, key=lambda t: (-t[0], not t[1]))
    fig, axes = plt.subplots(1, max(1, len(combos)), figsize=(6 * max(1, len(combos)), 5), squeeze=False)
    for ax, (D, causal) in zip(axes[0], combos):
        rs = [r for r in rows if r["D"] == D and r["causal"] == causal and "fwdbwd" in r]
        for m in sorted({r["method"] for r in rs}):
            pts = sorted((r["n"], r["fwdbwd"]) for r in rs if r["method"] == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ls="-" if m.startswith("sus") else "--",
                    label=m)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n (tokens)")
        ax.set_ylabel("forward+backward ms")
        ax.set_title(f"D={D}, H={16 if D == 128 else 32}, {'causal' if causal else 'full'}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{meta['card']}, torch {meta['torch']}, triton {meta['triton']}, bf16, B=1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
