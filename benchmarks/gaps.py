"""Where an eager forward+backward leaves the GPU idle: SUS against cuDNN SDPA.

    python3 benchmarks/gaps.py [--n 16384] [--d 128] [--h 16] [--c 32] [--trace-dir DIR]

Each call is timed the way do_bench times it (L2 flushed, grads set to None, CUDA events around
the call alone), then traced with torch.profiler. From the trace, per call: how long the GPU waited
for the first kernel after the flush (host latency the timing sees), the idle gaps between the
call's kernels (with the kernels on each side), the kernels' sum against their span, and every
CUDA runtime call over 20 us (a sync, an allocation). Last, torch.cuda.set_sync_debug_mode reports
any synchronizing call in one f+b. Causal, bf16, B=1.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import sus_fx


def timed(fn, ins, flush, reps=30):
    """Median ms of fn between CUDA events, after an L2 flush and with grads None (as do_bench)."""
    ts = []
    for _ in range(reps):
        for t in ins:
            t.grad = None
        flush.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def trace(fn, ins, flush, path, reps=3):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for i in range(reps):
            for t in ins:
                t.grad = None
            with torch.profiler.record_function(f"flush{i}"):
                flush.zero_()
            with torch.profiler.record_function(f"call{i}"):
                fn()
            torch.cuda.synchronize()
    prof.export_chrome_trace(path)
    with open(path) as f:
        return json.load(f)["traceEvents"]


def analyse(events, i):
    """One traced call: (report lines, dict of numbers)."""
    def window(name):
        e = next(e for e in events if e.get("name") == name and e.get("cat") == "user_annotation")
        return e["ts"], e["ts"] + e["dur"]

    c0, c1 = window(f"call{i}")
    f0, f1 = window(f"flush{i}")
    api = ("cuda_runtime", "cuda_driver")  # Triton launches through the driver API
    runtime = [e for e in events if e.get("cat") in api and c0 <= e["ts"] <= c1]
    corr = {e["args"].get("correlation") for e in runtime if "args" in e}
    flush_corr = {e["args"].get("correlation") for e in events
                  if e.get("cat") in api and f0 <= e["ts"] <= f1 and "args" in e}
    gpu = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy")
                  and e.get("args", {}).get("correlation") in corr), key=lambda e: e["ts"])
    flush_end = max((e["ts"] + e["dur"] for e in events if e.get("cat") == "kernel"
                     and e.get("args", {}).get("correlation") in flush_corr), default=None)
    lines, gaps = [], []
    busy = sum(e["dur"] for e in gpu)
    span = gpu[-1]["ts"] + gpu[-1]["dur"] - gpu[0]["ts"]
    first_wait = gpu[0]["ts"] - flush_end if flush_end is not None else float("nan")
    for a, b in zip(gpu, gpu[1:]):
        g = b["ts"] - (a["ts"] + a["dur"])
        if g > 5:
            gaps.append((g, a["name"][:40], b["name"][:40]))
    lines.append(f"  GPU waited {first_wait:.1f} us after the flush for the first kernel (host: {gpu[0]['ts'] - c0:.1f} us "
                 f"from the call's start to it); {len(gpu)} kernels, busy {busy:.1f} us, span {span:.1f} us, "
                 f"idle inside {span - busy:.1f} us")
    for g, a, b in sorted(gaps, reverse=True)[:8]:
        lines.append(f"    gap {g:7.1f} us  after `{a}`  before `{b}`")
    slow = sorted(((e["dur"], e["name"]) for e in runtime if e["dur"] > 20), reverse=True)
    for d, n in slow[:8]:
        lines.append(f"    runtime call {n} {d:.1f} us")
    lines.append(f"  host time of the call: {c1 - c0:.1f} us")
    return lines, dict(first_wait=first_wait, busy=busy, span=span, host=c1 - c0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--h", type=int, default=16)
    ap.add_argument("--c", type=float, default=32.0)
    ap.add_argument("--trace-dir", default=None)
    a = ap.parse_args()
    print(torch.__version__, torch.cuda.get_device_name())
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(1, a.h, a.n, a.d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    ins = [t.requires_grad_() for t in (q, k, v)]
    flush = torch.empty(256 * 2 ** 20 // 4, dtype=torch.int32, device="cuda")  # as do_bench's cache

    def sus():
        sus_fx.sus_attention(q, k, v, is_causal=True, c=a.c).backward(do)

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(do)

    tdir = a.trace_dir or tempfile.mkdtemp()
    os.makedirs(tdir, exist_ok=True)
    summary = []
    for name, fn in (("cudnn", cudnn), (f"sus c={a.c:g}", sus)):
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        ms = timed(fn, ins, flush)
        ev = trace(fn, ins, flush, os.path.join(tdir, f"trace_{name.split()[0]}.json"))
        print(f"\n## {name}, n={a.n} D={a.d} H={a.h}: f+b {ms:.3f} ms (events, median)")
        nums = []
        for i in range(1, 3):  # the first traced call pays the profiler's warm-up
            try:
                lines, d = analyse(ev, i)
            except Exception as e:  # the trace is kept (--trace-dir) for a look by hand
                print(f" traced call {i}: analysis failed: {type(e).__name__}: {e}")
                continue
            print(f" traced call {i}:")
            print("\n".join(lines))
            nums.append(d)
        summary.append((name, ms, nums[-1] if nums else dict(first_wait=float("nan"), busy=float("nan"),
                                                             span=float("nan"), host=float("nan"))))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode(1)
        sus()
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    syncs = [str(x.message)[:160] for x in w if "synchroniz" in str(x.message).lower()]
    print(f"\nsynchronizing calls in one SUS f+b: {len(syncs)}")
    for s in syncs[:5]:
        print("  ", s)
    print("\n| method | f+b ms (events) | GPU wait for first kernel us | kernels busy us | span us | idle inside us |")
    print("|---|---|---|---|---|---|")
    for name, ms, d in summary:
        print(f"| {name} | {ms:.3f} | {d['first_wait']:.1f} | {d['busy']:.1f} | {d['span']:.1f} | "
              f"{d['span'] - d['busy']:.1f} |")


if __name__ == "__main__":
    main()
