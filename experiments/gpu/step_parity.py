"""Step 4 of the issue-5 GPU driver: training parity on the GPU (examples/train_gpt.py parity).

The same model from the same initialization, trained with the exact backward on two data orders
(A: order 0, B: order 1; their gap is the run-to-run noise) and with SUS c = 16 and 32 on order 0,
bf16 autocast, patch engine (the model's SDPA calls go to sus_fx.sus_attention: same op and
backward as backend="sus", no compile time). All runs take the same number of steps: a short probe
times an exact and a SUS step, and the step count is chosen to fit the budget.

    python experiments/gpu/step_parity.py --out OUT --budget 120
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import torch  # noqa: E402


def probe(cfg, context, batch_size, device, amp, train, c, steps=12, warm=3):
    """Seconds per training step (after `warm` steps: Triton JIT, cuDNN plans) with this c."""
    from train_gpt import _sus_context, autocast
    from gpt import GPT
    from sus_fx import data as sdata
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    fwd, ctx = _sus_context(model, c, "patch")
    t = None
    with ctx:
        for i in range(warm + steps):
            if i == warm:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.time()
            x, y = sdata.window_batch(train, batch_size, context, seed=99_000_000 + i)
            with autocast(device, amp):
                loss = fwd(x.to(device), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return (time.time() - t) / steps


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--embd", type=int, default=192)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--amp", default="bf16")
    ap.add_argument("--c", type=float, nargs="+", default=[16.0, 32.0])
    ap.add_argument("--min-steps", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=1500)
    ap.add_argument("--evals", type=int, default=12, help="evaluations per run")
    ap.add_argument("--eval-batches", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help="skip the probe and use this many steps")
    a = ap.parse_args(argv)
    budget = common.Budget(a.budget)
    from gpt import GPTConfig
    import train_gpt
    cfg = GPTConfig(n_layer=a.layers, n_head=a.heads, n_embd=a.embd)
    train, _ = common.splits()
    runs_exact, runs_sus = 2, len(a.c)
    if a.steps is None:
        t_ex = probe(cfg, a.context, a.batch_size, a.device, a.amp, train, None)
        t_sus = probe(cfg, a.context, a.batch_size, a.device, a.amp, train, max(a.c))
        # evaluation: eval_batches forwards (~1/3 of a step each) per evaluation
        per_step_all = runs_exact * t_ex + runs_sus * t_sus
        eval_cost = a.evals * a.eval_batches * (runs_exact * t_ex + runs_sus * t_sus) / 3
        left = budget.left() - 8.0 - eval_cost - 4 * 1.0  # 1 s per run for model setup
        steps = int(0.85 * left / per_step_all) if per_step_all > 0 else a.min_steps
        print(f"[parity] probe: {1000 * t_ex:.1f} ms/step exact, {1000 * t_sus:.1f} ms/step SUS c={max(a.c):g} "
              f"(context {a.context}, batch {a.batch_size}, amp {a.amp}); {budget.left():.0f}s left -> {steps} steps",
              flush=True)
        if steps < a.min_steps:
            print(f"[parity] only {steps} steps fit; running {a.min_steps} anyway (may be cut by the step's timeout)",
                  flush=True)
        steps = max(a.min_steps, min(a.max_steps, steps))
    else:
        steps = a.steps
    warmup = max(10, steps // 20)
    eval_every = max(1, steps // a.evals)
    args = ["parity", "--out", a.out, "--context", str(a.context), "--steps", str(steps), "--batch-size",
            str(a.batch_size), "--layers", str(a.layers), "--heads", str(a.heads), "--embd", str(a.embd),
            "--lr", str(a.lr), "--warmup", str(warmup), "--c", *[f"{c:g}" for c in a.c], "--exact-orders", "2",
            "--sus-orders", "0", "--eval-every", str(eval_every), "--eval-batches", str(a.eval_batches),
            "--engine", "patch", "--device", a.device, "--amp", a.amp, "--corpus", common.corpus_name()]
    print("[parity] examples/train_gpt.py " + " ".join(args), flush=True)
    rc = train_gpt.main(args)
    print(f"[parity] done in {budget.elapsed():.0f}s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
