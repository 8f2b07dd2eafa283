"""Data-parallel training through backend="sus" on two GPUs (issue 6): DDP, FSDP2, per-rank masks.

    torchrun --nproc_per_node=2 benchmarks/distributed_gpu.py --out DIR             # 2 GPUs, NCCL
    torchrun --nproc_per_node=2 benchmarks/distributed_gpu.py --device cpu --tiny --out DIR   # gloo check

Model: examples/gpt.py's GPT (GPU: 4 layers, width 256, 4 heads, context 1024, bf16 autocast;
--tiny: 2 layers, width 32, context 32, fp32), compiled with
torch.compile(model, backend="sus", options={"c": C}), AdamW, a fixed token stream (the KJV text
if it is cached, else the CPython standard library sources, else random bytes), the same global
batch at every step in every run, the same initial weights (torch.manual_seed(0) on every rank).

Parts, each wrapped so that a failure is recorded and the next part still runs:
  ddp        DDP(model), then torch.compile; each rank gets half of the global batch.
  rank_masks ranks seeded alike and fed identical inputs must draw different SUS masks:
             (i) op level: sus::attention_forward on both ranks draws the same dropout seed and
             sampling seeds that differ by the rank offset (mixed in at run time when the forward
             draws them, sus_fx.ops.rank_seed_offset), so sus::attention_backward's dK/dV differ
             between ranks, while with c=inf they agree up to
             float rounding; (ii) model level: one no_sync step of the compiled DDP model on the same
             batch on both ranks: the local (not yet all-reduced) gradients differ.
  fsdp2      fully_shard on every block and on the root, then torch.compile; halves likewise.
  single     single-device references on the full global batch, no collectives, run on both
             devices at once: rank 0 trains the exact model (c=inf) and SUS seed 1, rank 1 SUS
             seeds 2 and 3 (same init, same batches; only the masks differ between SUS runs).

Tolerance (what "matches single-GPU training" means for a stochastic estimator): every curve is
compared with the single-device exact curve E by the RMS over steps of the loss difference,
dev(X) = sqrt(mean_t (X_t - E_t)^2). The single-device SUS runs S1..S3 measure how far SUS
noise alone moves a run from E (their batches, init and optimizer are identical to E's). A
distributed run passes when dev(run) <= 3 * max_i dev(S_i) + floor (floor: 0.02 nats in bf16,
0.005 in fp32, for reduction-order differences that exist without SUS). A distributed run that is
the same stochastic process as a single-device SUS run has dev drawn from the same distribution
as the dev(S_i); 3x their maximum is far outside that spread unless the gradients are wrong
(unaveraged, double counted, one rank's masks reused, a missing shard...). Also required: every
loss finite, and the loss falls (last 5 steps' mean below the first loss by --min-drop).
Loss curves under AdamW cannot see a gradient scale error (Adam is scale invariant), so each run
also compares its step-0 gradient (all-reduced / all-gathered) with the eager exact gradient on
the full batch: relative error <= 3 * max over the S_i of theirs + floor (0.05 bf16, 0.005 fp32),
and norm ratio in [0.9, 1.1 * sqrt(1 + tol^2)] (a sum instead of a mean over ranks gives 2).
Checked on CPU: doubling the DDP gradients leaves the loss curve unchanged but fails this check.

Writes DIR/distributed.json and DIR/distributed.md; prints the table last; exits 1 if any part
failed. Expected wall time on 2 x H200: about 2-3 minutes, most of it Inductor compiles.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples"))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import sus_fx  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402

try:
    from torch.distributed.fsdp import fully_shard  # torch >= 2.6
except ImportError:  # pragma: no cover
    from torch.distributed._composable.fsdp import fully_shard

INF = float("inf")


def ensure_backend() -> None:
    """backend="sus" comes from the package's entry point; register it by hand when the repo is
    used without `pip install -e .` (e.g. a fresh device machine)."""
    from torch._dynamo.backends.registry import lookup_backend, register_backend
    try:
        lookup_backend("sus")
    except Exception:
        from sus_fx.backend import sus_backend
        register_backend(compiler_fn=sus_backend, name="sus")


def log0(*a):
    if dist.get_rank() == 0:
        print(*a, flush=True)


# ----------------------------------------------------------------------------------------------
# Setup

def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny model and few steps (CPU check)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--c", type=float, default=None)
    ap.add_argument("--batch", type=int, default=None, help="global batch (split evenly over ranks)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--parts", default="ddp,rank_masks,fsdp2,single")
    ap.add_argument("--min-drop", type=float, default=None)
    a = ap.parse_args()
    if a.tiny:
        d = dict(steps=8, c=4.0, batch=4, lr=1e-2, min_drop=0.05)
        a.cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32)
        a.T = 32
    else:
        d = dict(steps=40, c=16.0, batch=8, lr=2e-3, min_drop=0.5)
        a.cfg = GPTConfig(n_layer=4, n_head=4, n_embd=256)
        a.T = 1024
    for k, v in d.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.bf16 = a.device == "cuda"
    a.floor = 0.02 if a.bf16 else 0.005
    a.grad_floor = 0.05 if a.bf16 else 0.005  # compiled vs eager rounding of the step-0 gradient
    return a


def token_stream():
    from sus_fx import data as sdata
    path = os.path.join(sdata.cache_dir(), "kjv.txt")
    try:
        if os.path.exists(path):
            return "kjv", sdata.byte_tokens(sdata.kjv_text())
    except Exception:
        pass
    try:
        return "cpython-stdlib", sdata.byte_tokens(sdata.stdlib_text(max_bytes=4 << 20))
    except Exception:
        g = torch.Generator().manual_seed(0)
        return "random-bytes", torch.randint(0, 256, (1 << 20,), dtype=torch.uint8, generator=g)


class Setup:
    def __init__(self, args):
        self.args = args
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if args.device == "cuda":
            self.dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.rank)))
            torch.cuda.set_device(self.dev)
        else:
            self.dev = torch.device("cpu")
        self.source, self.data = token_stream()
        torch.manual_seed(0)
        self.init_state = {k: v.clone() for k, v in GPT(args.cfg).state_dict().items()}
        self.g_exact = self._exact_grad0()

    def _exact_grad0(self):
        """The step-0 gradient on the full global batch, eager model (SDPA: exact attention)."""
        m = self.model()
        x, y = self.batch(0, local=False)
        with self.autocast():
            loss = m(x, y)
        loss.backward()
        return flat_grad(m)

    def model(self):
        m = GPT(self.args.cfg)
        m.load_state_dict(self.init_state)
        m.lm_head.weight = m.wte.weight  # keep the tie (load_state_dict copies into both names alike)
        return m.to(self.dev)

    def batch(self, step, local=True):
        from sus_fx import data as sdata
        x, y = sdata.window_batch(self.data, self.args.batch, self.args.T, seed=1000 + step)
        if local:
            n = self.args.batch // self.world
            x, y = x[self.rank * n:(self.rank + 1) * n], y[self.rank * n:(self.rank + 1) * n]
        return x.to(self.dev), y.to(self.dev)

    def autocast(self):
        if self.args.bf16:
            return torch.autocast(self.dev.type, dtype=torch.bfloat16)
        return torch.autocast(self.dev.type, enabled=False)

    def optimizer(self, model):
        return torch.optim.AdamW(model.parameters(), lr=self.args.lr, betas=(0.9, 0.95), weight_decay=0.0)

    def sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)


def flat_grad(model):
    """All parameter gradients as one fp32 vector (FSDP2's sharded DTensor grads all-gathered)."""
    gs = []
    for p in model.parameters():
        g = p.grad
        if hasattr(g, "full_tensor"):
            g = g.full_tensor()
        gs.append(g.detach().float().reshape(-1))
    return torch.cat(gs)


def compiled(model, c, reports):
    # (min_length 0: T = 1024 is below the CUDA default, which would leave the attention exact)
    return torch.compile(model, backend="sus", options={"c": c, "report": reports.append, "min_length": 0})


def train(setup, fn, model, steps, local, distributed):
    """Trains; returns per-step global losses and timings. `fn(x, y)` -> loss."""
    opt = setup.optimizer(model)
    warm = max(1, steps // 8)
    losses, t_first = [], None
    t0 = time.time()
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = setup.args.lr * min(1.0, (s + 1) / warm)
        x, y = setup.batch(s, local=local)
        opt.zero_grad(set_to_none=True)
        with setup.autocast():
            loss = fn(x, y)
        loss.backward()
        if s == 0:
            g = flat_grad(model)
            grad0 = dict(rel_err=float((g - setup.g_exact).norm() / setup.g_exact.norm()),
                         norm_ratio=float(g.norm() / setup.g_exact.norm()))
            del g
        opt.step()
        l = loss.detach().float()
        if distributed:
            dist.all_reduce(l)
            l = l / setup.world
        losses.append(float(l))
        if s == 0:
            setup.sync()
            t_first = time.time() - t0
            t1 = time.time()
    setup.sync()
    per_step = (time.time() - t1) / max(1, steps - 1)
    return dict(losses=losses, first_step_s=round(t_first, 2), step_s=round(per_step, 4), grad0=grad0)


# ----------------------------------------------------------------------------------------------
# Parts

def part_ddp(setup, state):
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch._dynamo.reset()
    torch.manual_seed(0)  # ranks seeded alike, as most scripts do: only the rank offset separates masks
    model = setup.model()
    ddp = DDP(model, device_ids=[setup.dev.index] if setup.dev.type == "cuda" else None)
    reports = []
    f = compiled(ddp, setup.args.c, reports)
    res = train(setup, lambda x, y: f(x, y), ddp, setup.args.steps, local=True, distributed=True)
    res["sites"] = sum(len(r.sites) for r in reports)
    res["graphs"] = len(reports)
    state["ddp"] = (ddp, f)
    return res


def part_fsdp2(setup, state):
    from torch.distributed.device_mesh import init_device_mesh
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = setup.model()
    mesh = init_device_mesh(setup.dev.type, (setup.world,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    reports = []
    f = compiled(model, setup.args.c, reports)
    res = train(setup, lambda x, y: f(x, y), model, setup.args.steps, local=True, distributed=True)
    res["sites"] = sum(len(r.sites) for r in reports)
    res["graphs"] = len(reports)
    res["param_type"] = type(model.blocks[0].attn.c_attn.weight).__name__
    return res


def _gather(obj):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def part_rank_masks(setup, state):
    res = {}
    dev = setup.dev
    dtype = torch.bfloat16 if setup.args.bf16 else torch.float32
    B, H, L, D = (1, 2, 256, 64) if not setup.args.tiny else (1, 2, 32, 16)
    g = torch.Generator().manual_seed(123)  # identical inputs on every rank
    q, k, v, do = (torch.randn(B, H, L, D, generator=g).to(dev, dtype) for _ in range(4))
    scale = D ** -0.5
    per_c = {}
    for c in (4.0, INF):
        torch.manual_seed(0)  # ranks seeded alike
        out, lse, seed = torch.ops.sus.attention_forward(q, k, v, None, 0.0, True, scale, c)
        dq, dk, dv, _ = torch.ops.sus.attention_backward(do, q, k, v, None, out, lse, seed, 0.0, True, scale, c,
                                                         False, 0)
        mine = dict(seed=seed.cpu(), dq=dq.float().cpu(), dk=dk.float().cpu(), dv=dv.float().cpu(),
                    offset=sus_fx.ops.rank_seed_offset())
        per_c["inf" if math.isinf(c) else c] = _gather(mine)
    sus, ex = per_c[4.0], per_c["inf"]
    res["seeds_per_rank"] = [[str(int(x)) for x in r["seed"]] for r in sus]
    res["rank_offsets"] = [str(r["offset"]) for r in sus]
    res["op_sus_rel_diff_between_ranks"] = {n: _rel(sus[1][n], sus[0][n]) for n in ("dq", "dk", "dv")}
    res["op_exact_rel_diff_between_ranks"] = {n: _rel(ex[1][n], ex[0][n]) for n in ("dq", "dk", "dv")}
    res["op_sus_rel_err_vs_exact_rank0"] = {n: _rel(sus[0][n], ex[0][n]) for n in ("dq", "dk", "dv")}
    mean = {n: (sus[0][n] + sus[1][n]) / 2 for n in ("dq", "dk", "dv")}
    res["op_sus_rel_err_vs_exact_rank_mean"] = {n: _rel(mean[n], ex[0][n]) for n in ("dq", "dk", "dv")}
    seeds = [r["seed"] for r in sus]
    checks = {
        # ranks seeded alike draw the same dropout seed (as torch's own dropout would) ...
        "dropout_seed_equal": all(int(s[0]) == int(seeds[0][0]) for s in seeds),
        # ... and the rank enters the sampling seed: either already in the forward's seed[1]
        # (current sus_fx/ops.py) or added when the backward runs (rank_seed_offset, older design)
        "rank_enters_sampling_seed": (len({int(s[1]) for s in seeds}) == len(seeds)
                                      or len(set(res["rank_offsets"])) == len(res["rank_offsets"])),
        # SUS: the ranks' dK/dV differ by far more than the exact backward's rounding differences
        "op_dk_dv_differ": all(res["op_sus_rel_diff_between_ranks"][n] > 1e-3
                               and res["op_sus_rel_diff_between_ranks"][n]
                               > 10 * res["op_exact_rel_diff_between_ranks"][n] for n in ("dk", "dv")),
    }

    # model level: one no_sync step of the compiled DDP model on the same batch on every rank
    if "ddp" in state:
        ddp, f = state["ddp"]
        x, y = setup.batch(10_000, local=False)
        n = setup.args.batch // setup.world
        x, y = x[:n], y[:n]  # the same rows on every rank
        ddp.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with ddp.no_sync():
            with setup.autocast():
                loss = f(x, y)
            loss.backward()
        w = ddp.module.blocks[0].attn.c_attn.weight
        grads = _gather(dict(loss=float(loss.detach()), g=w.grad.float().cpu()))
        ddp.zero_grad(set_to_none=True)
        res["model_losses_per_rank"] = [r["loss"] for r in grads]
        res["model_local_grad_rel_diff"] = _rel(grads[1]["g"], grads[0]["g"])
        checks["model_losses_equal"] = abs(grads[0]["loss"] - grads[1]["loss"]) <= 1e-3 * abs(grads[0]["loss"])
        checks["model_local_grads_differ"] = res["model_local_grad_rel_diff"] > 1e-3
    else:
        res["model_level"] = "skipped: the ddp part did not produce a model"
    res["checks"] = checks
    if not all(checks.values()):
        raise AssertionError(f"rank mask checks failed: {checks}")
    return res


def part_single(setup, state):
    """Single-device runs on the full global batch (no collectives): rank 0 exact + SUS seed 1,
    rank 1 SUS seeds 2 and 3 (other ranks: nothing)."""
    torch._dynamo.reset()
    plan = {0: [("exact", INF, 0), ("sus_seed1", setup.args.c, 1)],
            1: [("sus_seed2", setup.args.c, 2), ("sus_seed3", setup.args.c, 3)]}.get(setup.rank, [])
    if setup.world == 1:
        plan += [("sus_seed2", setup.args.c, 2)]
    mine, fns = {}, {}
    for name, c, seed in plan:
        try:
            key = "inf" if math.isinf(c) else c
            if key not in fns:  # one compile per c; later runs reload the initial weights
                model = setup.model()
                fns[key] = (model, compiled(model, c, []))
            model, f = fns[key]
            model.load_state_dict(setup.init_state)
            torch.manual_seed(seed)
            mine[name] = train(setup, lambda x, y: f(x, y), model, setup.args.steps, local=False, distributed=False)
        except Exception as e:
            mine[name] = dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    merged = {}
    for d in _gather(mine):
        merged.update(d)
    return merged


# ----------------------------------------------------------------------------------------------
# Comparison and output

def _dev(a, b):
    n = min(len(a), len(b))
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a[:n], b[:n])) / max(1, n))


def compare(results, args):
    single = results.get("single", {})
    exact = single.get("result", {}).get("exact", {})
    sus_runs = {k: v for k, v in single.get("result", {}).items() if k.startswith("sus_seed") and "losses" in v}
    rows, verdict = [], {}
    if "losses" not in exact or not sus_runs:
        return rows, {"error": "no single-device exact run or no single-device SUS run to compare against"}
    E = exact["losses"]
    ref = max(_dev(v["losses"], E) for v in sus_runs.values())
    tol = 3 * ref + args.floor
    # step-0 gradient against the eager exact gradient on the same full batch: SUS noise of one
    # step (no trajectory divergence yet). An unaveraged or double-counted all-reduce gives a norm
    # ratio near 2; a missing shard or rank a relative error near 1.
    g_ref = max(v["grad0"]["rel_err"] for v in sus_runs.values())
    g_tol = 3 * g_ref + args.grad_floor
    ratio_hi = 1.1 * math.sqrt(1 + g_tol ** 2)
    verdict.update(reference_dev=ref, tolerance=tol, floor=args.floor, grad0_reference_rel_err=g_ref,
                   grad0_tolerance=g_tol, grad0_norm_ratio_range=[0.9, ratio_hi])

    def row(name, r, is_dist):
        L = r["losses"]
        ok_finite = all(math.isfinite(x) for x in L)
        drop = L[0] - sum(L[-5:]) / len(L[-5:])
        d = _dev(L, E)
        g0 = r["grad0"]
        ok_grad = g0["rel_err"] <= g_tol and 0.9 <= g0["norm_ratio"] <= ratio_hi
        ok = ok_finite and drop >= args.min_drop and (not is_dist or (d <= tol and ok_grad))
        rows.append(dict(run=name, first=L[0], last=L[-1], drop=drop, dev_vs_exact=d,
                         tolerance=tol if is_dist else None, grad0_rel_err=g0["rel_err"],
                         grad0_norm_ratio=g0["norm_ratio"], grad0_tolerance=g_tol if is_dist else None,
                         ok=ok, first_step_s=r.get("first_step_s"), step_s=r.get("step_s")))
        return ok

    row("single exact (c=inf)", exact, False)
    for k, v in sorted(sus_runs.items()):
        row(f"single {k}", v, False)
    for part in ("ddp", "fsdp2"):
        r = results.get(part, {})
        if r.get("ok") and "losses" in r["result"]:
            verdict[part] = row(f"{part} c={args.c:g}", r["result"], True)
    return rows, verdict


def markdown(rows, results, args, meta):
    out = [f"torch {meta['torch']}, {meta['devices']}, world {meta['world']}, data {meta['data']}, "
           f"model {meta['model']}, T={args.T}, global batch {args.batch}, steps {args.steps}, c={args.c:g}, "
           f"{'bf16 autocast' if args.bf16 else 'fp32'}", ""]
    out.append("| run | first loss | last loss | drop | RMS dev vs exact | tol | step-0 grad rel err | tol "
               "| grad norm ratio | ok | 1st step s | step s |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tol = "-" if r["tolerance"] is None else f"{r['tolerance']:.4f}"
        gtol = "-" if r["grad0_tolerance"] is None else f"{r['grad0_tolerance']:.3f}"
        out.append(f"| {r['run']} | {r['first']:.4f} | {r['last']:.4f} | {r['drop']:.3f} | {r['dev_vs_exact']:.4f} "
                   f"| {tol} | {r['grad0_rel_err']:.3f} | {gtol} | {r['grad0_norm_ratio']:.3f} "
                   f"| {'yes' if r['ok'] else 'NO'} | {r['first_step_s']} | {r['step_s']} |")
    out.append("")
    out.append("| part | status | seconds | note |")
    out.append("|---|---|---|---|")
    for name, r in results.items():
        note = r.get("error", "")
        if name == "rank_masks" and "result" in r:
            rm = r["result"]
            note = (f"op rel diff between ranks (SUS c=4) dk {rm['op_sus_rel_diff_between_ranks']['dk']:.3g}, "
                    f"(exact) dk {rm['op_exact_rel_diff_between_ranks']['dk']:.3g}; model local grad rel diff "
                    f"{rm.get('model_local_grad_rel_diff', 'n/a')}")
        elif name in ("ddp", "fsdp2") and "result" in r:
            note = f"{r['result']['sites']} attention sites rewritten in {r['result']['graphs']} graph(s)"
        out.append(f"| {name} | {'ok' if r['ok'] else 'FAILED'} | {r['seconds']:.1f} | {note.splitlines()[0] if note else ''} |")
    return "\n".join(out)


def main():
    args = parse()
    ensure_backend()
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=240))
    setup = Setup(args)
    os.makedirs(args.out, exist_ok=True)
    meta = dict(torch=torch.__version__, world=setup.world, data=setup.source,
                devices=(torch.cuda.get_device_name(setup.dev) if args.device == "cuda" else "cpu"),
                model=f"GPT {args.cfg.n_layer}x{args.cfg.n_embd} ({args.cfg.n_head} heads)",
                params=sum(p.numel() for p in GPT(args.cfg).parameters()))
    log0(f"# {meta}")
    parts = {"ddp": part_ddp, "fsdp2": part_fsdp2, "rank_masks": part_rank_masks, "single": part_single}
    results, state = {}, {}
    t_all = time.time()
    for name in [p for p in args.parts.split(",") if p]:
        t0 = time.time()
        try:
            r = dict(ok=True, result=parts[name](setup, state))
        except Exception as e:
            r = dict(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            print(f"[rank {setup.rank}] part {name} FAILED:\n{r['traceback']}", file=sys.stderr, flush=True)
        r["seconds"] = time.time() - t0
        # every rank learns whether the part failed anywhere (a one-sided failure fails the part)
        oks = _gather(r["ok"])
        if r["ok"] and not all(oks):
            r = dict(r, ok=False, error=f"failed on rank(s) {[i for i, o in enumerate(oks) if not o]}")
        results[name] = r
        log0(f"# part {name}: {'ok' if r['ok'] else 'FAILED'} in {r['seconds']:.1f} s")
        if setup.rank == 0:  # write as we go: a later hang still leaves the earlier parts on disk
            with open(os.path.join(args.out, "distributed.json"), "w") as fh:
                json.dump(dict(meta=meta, parts=results), fh, indent=1, default=str)
    rows, verdict = compare(results, args)
    for part in ("ddp", "fsdp2"):
        if part in results and results[part]["ok"] and verdict.get(part) is False:
            results[part]["ok"] = False
            results[part]["error"] = "loss curve outside the stochastic tolerance (see the table)"
    if "error" in verdict and any(p in results for p in ("ddp", "fsdp2")):
        for part in ("ddp", "fsdp2"):
            if part in results and results[part]["ok"]:
                results[part]["ok"] = False
                results[part]["error"] = f"not compared: {verdict['error']}"
    ok = all(r["ok"] for r in results.values())
    if setup.rank == 0:
        md = markdown(rows, results, args, meta)
        with open(os.path.join(args.out, "distributed.json"), "w") as fh:
            json.dump(dict(meta=meta, args={k: (str(v) if k == "cfg" else v) for k, v in vars(args).items()},
                           parts=results, comparison=dict(rows=rows, verdict=verdict),
                           total_s=time.time() - t_all, ok=ok), fh, indent=1, default=str)
        with open(os.path.join(args.out, "distributed.md"), "w") as fh:
            fh.write(md + "\n")
        print(md, flush=True)
        print(f"# {'PASS' if ok else 'FAIL'} in {time.time() - t_all:.0f} s", flush=True)
    dist.destroy_process_group()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
