"""Why GPT-124M steps at 8k with backend="sus" jump between ~24 and ~36 ms from one stretch of
steps to the next while backend="inductor" holds ~30 ms (H200, stop 16: benchmarks/results/
h200_stop16_*). The unions per block grow over those steps (e2e_gpt.py --union-trace) but stay
~100 columns, far too few for phase (b) to cost milliseconds. So per step, for each backend:

  wall     synchronized step time (as e2e_gpt.py times it)
  launch   host time until the step's last launch returned (host-bound where launch ~ wall)
  kernels  sum of the step's GPU kernel times, by category (torch.profiler, a second run of steps)
  busy     first kernel start to last kernel end (idle GPU inside the step where busy > kernels)

    python benchmarks/step_jitter.py --T 8192 --c 8 --steps 40 --out results_dir
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_gpt as E  # noqa: E402  (GPT, data, Trainer, classify: the same training step)


class GCClock:
    """Python's garbage-collector pauses (gc.callbacks): total ms and collections by generation."""

    def __init__(self):
        self.ms, self.by_gen, self._t = 0.0, [0, 0, 0], None
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
        elif self._t is not None:
            self.ms += (time.perf_counter() - self._t) * 1e3
            self.by_gen[info["generation"]] += 1
            self._t = None

    def take(self):
        out = dict(gc_ms=self.ms, gc_gen=list(self.by_gen))
        self.ms, self.by_gen = 0.0, [0, 0, 0]
        return out


GC = GCClock()


def timed_steps(tr, tokens, T, n, device, first):
    rows = []
    GC.take()
    for i in range(n):
        x, y = E.batch(tokens, T, 99, first + i, device)
        E.sync(device)
        t0 = time.perf_counter()
        marks = []
        tr.step(x, y, first + i, marks)
        t1 = time.perf_counter()
        E.sync(device)
        rows.append(dict(step=first + i, wall=(time.perf_counter() - t0) * 1e3, launch=(t1 - t0) * 1e3,
                         fwd=(marks[0] - t0) * 1e3, bwd=(marks[1] - marks[0]) * 1e3, opt=(t1 - marks[1]) * 1e3,
                         **GC.take()))
    return rows


def profiled_steps(tr, tokens, T, n, device, first):
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(n):
            x, y = E.batch(tokens, T, 99, first + i, device)
            E.sync(device)
            with record_function(f"jitter_step_{i}"):
                tr.step(x, y, first + i)
                E.sync(device)
    ev = prof.events()
    steps = sorted((e for e in ev if e.name.startswith("jitter_step_")), key=lambda e: e.time_range.start)
    kern = sorted((e for e in ev if e.device_type == DeviceType.CUDA), key=lambda e: e.time_range.start)
    if len(kern) % max(1, len(steps)):
        print(f"  (the {len(kern)} kernels do not split evenly over {len(steps)} steps: the split is approximate)")
    out = []
    # Each step launches the same kernels (static graphs), so the sorted kernels are cut into equal
    # runs. (Cutting by the steps' CPU time ranges put two steps' kernels into every other step on
    # the H200, stop 16 call 4: the GPU timestamps are offset from the CPU ones.)
    per = len(kern) // max(1, len(steps))
    for si, s in enumerate(steps):
        ks = kern[si * per:(si + 1) * per]
        cats = {}
        for k in ks:
            c = E.classify(k.name)
            cats[c] = cats.get(c, 0.0) + k.time_range.elapsed_us() / 1e3
        out.append(dict(step=first + si, wall_prof=(s.time_range.end - s.time_range.start) / 1e3,
                        kernels=sum(cats.values()), n_kernels=len(ks),
                        busy=((max(k.time_range.end for k in ks) - ks[0].time_range.start) / 1e3) if ks else 0.0,
                        cats=cats))
    return out


def host_profile(tr, tokens, T, n, device, first):
    """cProfile of n steps: the host's own work only (each step is synchronized outside the
    profiled span), with the backward on this thread so that its Python is profiled too."""
    import cProfile
    import io
    import pstats
    pr = cProfile.Profile()
    for i in range(n):
        x, y = E.batch(tokens, T, 99, first + i, device)
        E.sync(device)
        with torch.autograd.set_multithreading_enabled(False):  # the backward on this thread, profiled
            pr.enable()
            tr.step(x, y, first + i)
            pr.disable()
        E.sync(device)
    out = io.StringIO()
    st = pstats.Stats(pr, stream=out)
    st.sort_stats("tottime").print_stats(25)
    st.sort_stats("cumulative").print_stats(45)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=8192)
    ap.add_argument("--c", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--backends", default="inductor,sus")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--mode", default=None, help="torch.compile mode for both backends (reduce-overhead: CUDA graphs)")
    ap.add_argument("--gc-freeze", action="store_true", help="then the steps again after gc.freeze()")
    ap.add_argument("--cprofile", type=int, default=0,
                    help="then N steps under cProfile: the host functions by own and cumulative time")
    ap.add_argument("--tiny", action="store_true", help="2 layers, width 64, on the CPU (smoke test)")
    a = ap.parse_args()
    device = torch.device("cpu" if a.tiny else "cuda")
    torch.set_float32_matmul_precision("high")
    tokens, desc = E.load_tokens(None)
    tokens, _ = E.sdata.split(tokens, 0.9)
    cfg = (E.GPTConfig(vocab_size=256, n_layer=2, n_head=2, n_embd=64) if a.tiny else
           E.GPTConfig(vocab_size=50304, n_layer=12, n_head=12, n_embd=768))
    torch.manual_seed(0)
    model = E.GPT(cfg).to(device)
    init_sd = {k: v.clone() for k, v in model.state_dict().items()}
    targs = argparse.Namespace(lr=6e-4, lr_warmup=20, mode=a.mode)
    R = dict(meta=dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "CPU", torch=torch.__version__, T=a.T, c=a.c, data=desc))
    for name in a.backends.split(","):
        torch._dynamo.reset()
        compiled, _ = E.make_compiled(model, name, None if name == "inductor" else a.c, a.mode)
        tr = E.Trainer(model, compiled, targs, device)
        tr.reset(init_sd)
        timed_steps(tr, tokens, a.T, 6, device, 0)  # compile + warm-up
        timed = timed_steps(tr, tokens, a.T, a.steps, device, 100)
        if a.gc_freeze:  # the same steps again with every object alive now frozen (out of the GC's scans)
            gc.collect()
            gc.freeze()
            frozen = timed_steps(tr, tokens, a.T, a.steps, device, 100 + a.steps)
            gc.unfreeze()
            fw = [r["wall"] for r in frozen]
            print(f"{name} after gc.freeze(): wall median {statistics.median(fw):.1f} ms, min {min(fw):.1f}, "
                  f"max {max(fw):.1f}; launch median {statistics.median(r['launch'] for r in frozen):.1f} ms; "
                  f"GC {sum(r['gc_ms'] for r in frozen) / len(frozen):.2f} ms/step")
            R.setdefault("frozen", {})[name] = frozen
        prof = profiled_steps(tr, tokens, a.T, a.steps, device, 100 + a.steps)
        R[name] = dict(timed=timed, profiled=prof)
        if a.cprofile:
            R[name]["cprofile"] = host_profile(tr, tokens, a.T, a.cprofile, device, 200 + a.steps)
            print(R[name]["cprofile"])
        tr.opt = None
        torch.cuda.empty_cache()
        w = [r["wall"] for r in timed]
        print(f"{name}: wall median {statistics.median(w):.1f} ms, min {min(w):.1f}, max {max(w):.1f}; "
              f"launch median {statistics.median(r['launch'] for r in timed):.1f} ms")
        print("  timed  wall/launch: " + " ".join(f"{r['wall']:.0f}/{r['launch']:.0f}" for r in timed))
        print("  profiled kernels/busy ms: " + " ".join(f"{r['kernels']:.1f}/{r['busy']:.1f}" for r in prof))
        print(f"  GC pauses {sum(r['gc_ms'] for r in timed) / len(timed):.2f} ms/step, max "
              f"{max(r['gc_ms'] for r in timed):.1f}; collections by generation "
              f"{[sum(r['gc_gen'][g] for r in timed) for g in range(3)]}; gc objects {len(gc.get_objects())}")
        print("  host launch ms, median: " + ", ".join(
            f"{k} {statistics.median(r[k] for r in timed):.2f}" for k in ("fwd", "bwd", "opt")))
        cats = sorted({c for r in prof for c in r["cats"]})
        for c in cats:
            v = [r["cats"].get(c, 0.0) for r in prof]
            print(f"  {c:28s} min {min(v):6.2f} median {statistics.median(v):6.2f} max {max(v):6.2f} ms")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "step_jitter.json"), "w") as f:
        json.dump(R, f)


if __name__ == "__main__":
    main()
