"""Issue 5 on one GPU, in one call: pretrain, variance table, sampler comparison, training parity.

    bash experiments/gpu/run_issue5_gpu.sh            # on the GPU machine; results under $OUT
    bash experiments/gpu/run_issue5_gpu.sh --smoke    # tiny model on the CPU, ~2 min: catches typos

Steps (each a subprocess with its own soft budget and hard timeout; a failure is logged and the
next step still runs; every step writes its results as it goes):
  1. pretrain  examples/train_gpt.py pretrain: byte GPT (8 layers, 3 heads of 64, width 192; 3.6 M
               parameters, 14.4 MB checkpoint) on the KJV Bible at context 4096, bf16 autocast, exact
               backward, AdamW, cosine schedule over min(6000 steps, 150 s); ckpt.pt = best val.
  2. variance  sus_fx.variance on CUDA, fp32: c in {4,8,16,32,64} x n in {512,1024,2048,4096},
               batch size 1 -> variance.json, variance.png, tables in run.log.
  3. samplers  kernel sampler vs independent Bernoulli (reference) on the model's real q,k,v,dO
               (op level, fp32 and bf16) and for the whole model (SUS_FX_NO_KERNELS=1) -> samplers.json.
  4. parity    examples/train_gpt.py parity: exact orders 0 and 1, SUS c=16 and 32 on order 0, same
               init, context 1024, bf16 -> parity.json, loss.png.
Files under $OUT (at most 8 come back): run.log, ckpt.pt, train_log.json, variance.json, variance.png,
samplers.json, parity.json, loss.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import common  # noqa: E402

FALLBACK_CKPT = os.path.join(ROOT, "experiments", "gpt_kjv", "ckpt.pt")

GPU = dict(
    pretrain=dict(context=4096, batch=8, layers=8, heads=3, embd=192, lr=2e-3, warmup=100, steps=6000, seconds=150,
                  eval_every=250, eval_batches=8),
    variance=dict(n=[512, 1024, 2048, 4096], c=[4, 8, 16, 32, 64], batches=96, fixed=48, seconds=95),
    samplers=dict(n=2048, c=[16, 32], draws=32, batches=32, fixed=24, seconds=50, dtypes=["float32", "bfloat16"]),
    parity=dict(context=1024, batch=16, seconds=120, steps=None, max_steps=2000, min_steps=100),
    total=465, grace=25, device="cuda",
)
SMOKE = dict(
    pretrain=dict(context=128, batch=4, layers=2, heads=2, embd=32, lr=3e-3, warmup=5, steps=40, seconds=25,
                  eval_every=10, eval_batches=2),
    variance=dict(n=[64, 128, 256], c=[4, 8, 16, 32, 64], batches=4, fixed=2, seconds=40),
    samplers=dict(n=64, c=[16, 32], draws=2, batches=4, fixed=2, seconds=60, dtypes=["float32"]),
    parity=dict(context=128, batch=4, seconds=90, steps=None, max_steps=16, min_steps=5),
    total=300, grace=40, device="cpu",
)


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, line=""):
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self.f.write(line + "\n")


def run_step(name, cmd, env, soft, hard, log):
    """Runs cmd, streaming its output to the log; SIGTERM at `hard` s, SIGKILL 10 s later."""
    log(f"\n===== step {name}: soft budget {soft:.0f}s, hard timeout {hard:.0f}s =====")
    log("$ " + " ".join(cmd))
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         errors="replace", bufsize=1)

    def pump():
        for line in p.stdout:
            log(f"  {line.rstrip()}"[:2000])
    th = threading.Thread(target=pump, daemon=True)
    th.start()
    timed_out = False
    try:
        rc = p.wait(timeout=hard)
    except subprocess.TimeoutExpired:
        timed_out = True
        log(f"[driver] step {name}: hard timeout after {hard:.0f}s, terminating pid {p.pid}")
        p.terminate()
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
    th.join(timeout=5)
    dt = time.time() - t0
    log(f"[driver] step {name}: rc={rc}{' (timed out)' if timed_out else ''}, {dt:.0f}s")
    return {"rc": rc, "seconds": round(dt, 1), "timed_out": timed_out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", "--tiny", action="store_true", help="tiny model, few steps, CPU")
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--steps", nargs="+", default=["pretrain", "variance", "samplers", "parity"],
                    choices=["pretrain", "variance", "samplers", "parity"])
    ap.add_argument("--total", type=float, default=None, help="seconds for everything (default 465; smoke 300)")
    ap.add_argument("--ckpt", default=None, help="steps 2-3: use this checkpoint instead of step 1's")
    a = ap.parse_args(argv)
    P = SMOKE if a.smoke else GPU
    total = a.total or P["total"]
    t_start = time.time()
    out = a.out or ("/tmp/issue5_smoke_out" if a.smoke else None)
    if not out:
        print("no output folder: set $OUT or pass --out", file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    log = Log(os.path.join(out, "run.log"))
    py = sys.executable or "python3"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "examples")] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env["TQDM_DISABLE"] = "1"
    device = P["device"]
    if device == "cuda":
        try:
            import torch
            ok = torch.cuda.is_available()
            log(f"[driver] torch {torch.__version__}, cuda available: {ok}"
                + (f", {torch.cuda.get_device_name(0)}" if ok else ""))
        except Exception as e:  # noqa: BLE001
            ok = False
            log(f"[driver] torch import failed: {e!r}")
        if not ok:
            log("[driver] no CUDA device: run with --smoke for the CPU check")
            return 2
    corpus = common.prepare_corpus(os.path.join("/tmp", f"sus_fx_data_issue5_{os.getuid()}"))
    env.update(corpus["env"])
    log(f"[driver] corpus: {corpus['corpus']} from {corpus['source']}")
    log(f"[driver] out: {out}; total budget {total:.0f}s; {'SMOKE (CPU, tiny)' if a.smoke else 'GPU'}")

    order = ["pretrain", "variance", "samplers", "parity"]
    planned = {k: P[k]["seconds"] + (15 if k == "pretrain" else 8) for k in order}  # + startup/setup
    status = {}

    def soft_for(name):
        later = sum(planned[k] for k in order[order.index(name) + 1:] if k in a.steps)
        left = total - (time.time() - t_start) - later
        return max(15.0, min(P[name]["seconds"], left - (planned[name] - P[name]["seconds"])))

    ckpt = a.ckpt
    if "pretrain" in a.steps and not ckpt:
        S = P["pretrain"]
        soft = soft_for("pretrain")
        cmd = [py, "examples/train_gpt.py", "pretrain", "--out", out, "--context", str(S["context"]),
               "--steps", str(S["steps"]), "--batch-size", str(S["batch"]), "--layers", str(S["layers"]),
               "--heads", str(S["heads"]), "--embd", str(S["embd"]), "--lr", str(S["lr"]), "--warmup", str(S["warmup"]),
               "--eval-every", str(S["eval_every"]), "--eval-batches", str(S["eval_batches"]), "--amp", "bf16",
               "--time-budget", f"{soft:.0f}", "--keep-best", "--corpus", corpus["corpus"], "--device", device,
               "--engine", "patch"]
        status["pretrain"] = run_step("pretrain", cmd, env, soft, soft + 15 + P["grace"], log)
    if not ckpt:
        ckpt = os.path.join(out, "ckpt.pt")
        if not os.path.exists(ckpt):
            log(f"[driver] no {ckpt}: steps 2-3 fall back to the CPU-trained {FALLBACK_CKPT}")
            ckpt = FALLBACK_CKPT
    status["ckpt"] = ckpt
    if os.path.exists(ckpt):
        log(f"[driver] checkpoint {ckpt}: {os.path.getsize(ckpt) / 2**20:.2f} MiB")

    if "variance" in a.steps:
        S = P["variance"]
        soft = soft_for("variance")
        cmd = [py, "experiments/gpu/step_variance.py", "--ckpt", ckpt, "--out", out, "--device", device,
               "--n", *map(str, S["n"]), "--c", *map(str, S["c"]), "--batches", str(S["batches"]),
               "--fixed-batches", str(S["fixed"]), "--budget", f"{soft:.0f}"]
        status["variance"] = run_step("variance", cmd, env, soft, soft + P["grace"], log)
    if "samplers" in a.steps:
        S = P["samplers"]
        soft = soft_for("samplers")
        env3 = dict(env)
        if a.smoke:  # the Triton kernels on CPU tensors, through Triton's interpreter
            env3.update(TRITON_INTERPRET="1", SUS_FX_INTERPRET_KERNELS="1")
        cmd = [py, "experiments/gpu/step_samplers.py", "--ckpt", ckpt, "--out", out, "--device", device,
               "--n", str(S["n"]), "--c", *map(str, S["c"]), "--draws", str(S["draws"]), "--batches", str(S["batches"]),
               "--fixed-batches", str(S["fixed"]), "--budget", f"{soft:.0f}", "--dtypes", *S["dtypes"]]
        status["samplers"] = run_step("samplers", cmd, env3, soft, soft + P["grace"], log)
    if "parity" in a.steps:
        S = P["parity"]
        soft = soft_for("parity")
        pre = P["pretrain"]
        cmd = [py, "experiments/gpu/step_parity.py", "--out", out, "--device", device, "--budget", f"{soft:.0f}",
               "--context", str(S["context"]), "--batch-size", str(S["batch"]), "--layers", str(pre["layers"]),
               "--heads", str(pre["heads"]), "--embd", str(pre["embd"]), "--max-steps", str(S["max_steps"]),
               "--min-steps", str(S["min_steps"])]
        if S["steps"]:
            cmd += ["--steps", str(S["steps"])]
        if a.smoke:
            cmd += ["--eval-batches", "2", "--evals", "4"]
        status["parity"] = run_step("parity", cmd, env, soft, soft + P["grace"], log)

    log(f"\n[driver] all steps done in {time.time() - t_start:.0f}s")
    try:
        summary(out, status, corpus, log)
    except Exception as e:  # noqa: BLE001
        import traceback
        log(f"[driver] summary failed: {e!r}\n{traceback.format_exc(limit=3)}")
    return 0


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:  # noqa: BLE001
        return None


def summary(out, status, corpus, log):
    log("\n================ SUMMARY (issue 5, GPU) ================")
    log(f"corpus: {corpus['corpus']} ({corpus['source']})")
    rows = [[k, v["rc"], v["seconds"], "yes" if v["timed_out"] else "no"] for k, v in status.items() if isinstance(v, dict)]
    log(common.md_table(["step", "rc", "seconds", "timed out"], rows))
    tl = _load(os.path.join(out, "train_log.json"))
    if tl:
        m, r = tl["meta"], tl["run"]
        vals = r.get("val") or []
        n_steps = r.get("steps_done", len(r.get("train_loss", [])))
        log(f"\n1. pretrain: {m.get('layers')} layers x {m.get('embd')} wide, {m.get('heads')} heads, context "
            f"{m.get('context')}, batch {m.get('batch_size')}, {n_steps} steps"
            + (f" ({r['tokens'] / 1e6:.1f} M tokens, {r['seconds']:.0f}s)" if "tokens" in r else "")
            + (f"; final val {vals[-1][1]:.4f} nats/byte" if vals else ""))
        if m.get("ckpt_step") is not None:
            log(f"   ckpt.pt = step {m['ckpt_step']}, val {m['ckpt_val']:.4f} nats/byte "
                f"({m['ckpt_val'] / 0.6931:.3f} bits/byte); CPU run experiments/gpt_kjv: 1.787")
    log(f"   checkpoint used by steps 2-3: {status.get('ckpt')}")
    vj = _load(os.path.join(out, "variance.json"))
    if vj and vj.get("results"):
        res = vj["results"]
        ns = [r["meta"]["n"] for r in res]
        cs = [row["c"] for row in res[0]["rows"] if row["kind"] == "uniform"]
        body = []
        for c in cs:
            line = [f"{c:g}"]
            for r in res:
                hit = [x for x in r["rows"] if x["kind"] == "uniform" and x["c"] == c]
                if hit and hit[0]["relative_increase"] is not None:
                    h = hit[0]
                    line.append(f"{100 * h['relative_increase']:.3g}% ± {100 * (h['relative_increase_se'] or 0):.2g}"
                                f" / {100 * h['fraction_cut_full']:.1f}")
                else:
                    line.append("-")
            body.append(line)
        log("\n2. relative gradient variance increase / % cut of n x n (batch size 1, fp32; "
            f"training context {vj['info'].get('training_context')}):")
        log(common.md_table(["c \\ n"] + [str(n) for n in ns], body))
        for note in vj.get("notes", []):
            log(f"   note: {note.splitlines()[0]}")
    sj = _load(os.path.join(out, "samplers.json"))
    if sj:
        ops = sj.get("op_level") or []
        if ops:
            agg = {}
            for r in ops:
                key = (r["dtype"], r["c"])
                a = agg.setdefault(key, {"k": [0.0] * 3, "i": [0.0] * 3, "layers": 0, "BM": r["kernel_BM"]})
                for j, g in enumerate("qkv"):
                    a["k"][j] += r[f"d{g}_var_kernel"]
                    a["i"][j] += r[f"d{g}_var_indep"]
                a["layers"] += 1
            body = [[dt, BMc["BM"], f"{c:g}", BMc["layers"]] + [f"{BMc['k'][j] / BMc['i'][j]:.3f}" if BMc["i"][j] else "-"
                                                      for j in range(3)] for (dt, c), BMc in agg.items()]
            log(f"\n3a. kernel / independent sampler, E||g - g_exact||^2 summed over layers (real q,k,v,dO, "
                f"n={sj['info'].get('n')}; per layer with ± in run.log / samplers.json):")
            log(common.md_table(["dtype", "kernel BM", "c", "layers", "dQ", "dK", "dV"], body))
        cmp_ = sj.get("whole_model_compare") or []
        if cmp_:
            body = common.whole_model_compare_rows(cmp_)
            log("\n3b. whole model, relative variance increase, kernel vs independent (reference) sampler:")
            log(common.md_table(["c", "kernel", "independent", "(b) ratio kernel/indep"], body))
    pj = _load(os.path.join(out, "parity.json"))
    if pj:
        s = pj["summary"]
        m = pj["meta"]
        log(f"\n4. parity: context {m.get('context')}, batch {m.get('batch_size')}, {m.get('steps')} steps, "
            f"amp {m.get('amp')}; final val (nats/byte):")
        body = [[k, f"{v:.4f}"] for k, v in s["final_val"].items()]
        log(common.md_table(["run", "final val"], body))
        lo, hi = s["exact_val_range"]
        log(f"   exact range [{lo:.4f}, {hi:.4f}] (run-to-run noise {s['exact_run_to_run_noise']:.4f})")
        for k, v in s["sus"].items():
            d = v["minus_exact_same_order"]
            log(f"   {k}: {'-' if d is None else f'{d:+.4f}'} vs exact same order; inside exact range: "
                f"{v['inside_exact_range']}; gap inside noise: {v['gap_inside_exact_noise']}")
    files = sorted(os.listdir(out))
    log(f"\nfiles in $OUT ({len(files)}): {', '.join(files)}")


if __name__ == "__main__":
    sys.exit(main())
