"""Step 2 of the issue-5 GPU driver: the c x n variance table of the trained GPT on the GPU.

For each n (ascending) it runs sus_fx.variance.measure (patch engine: the model's SDPA calls go
to sus_fx.sus_attention, the same op and backward as backend="sus") with uniform c in --c,
batch size 1, fp32 (so the exact gradient and the SUS gradient differ only by the SUS noise),
and writes the JSON after every n. Batches are cut down for later n if the time budget demands.

    python experiments/gpu/step_variance.py --ckpt OUT/ckpt.pt --out OUT --budget 100
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import torch  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--c", type=float, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--batches", type=int, default=64)
    ap.add_argument("--fixed-batches", type=int, default=24)
    ap.add_argument("--draws", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--budget", type=float, default=100.0, help="soft seconds for the whole step")
    ap.add_argument("--json-name", default="variance.json")
    ap.add_argument("--png-name", default="variance.png")
    a = ap.parse_args(argv)
    budget = common.Budget(a.budget)
    from sus_fx import data as sdata
    from sus_fx import variance as V
    model, meta = common.load_model(a.ckpt, a.device)
    ctx_len = meta.get("context")
    train, _ = common.splits()
    info = dict(common.device_info(a.device), ckpt=a.ckpt, ckpt_meta=meta, corpus=common.corpus_name(),
                training_context=ctx_len, params=sum(p.numel() for p in model.parameters()))
    print(f"[variance] model {info['params']} params, trained at context {ctx_len}, device {a.device}", flush=True)
    results, notes = [], []
    path = os.path.join(a.out, a.json_name)
    per_backward = None  # seconds per backward at n_ref, measured on the last n done
    n_ref = None
    for i, n in enumerate(sorted(a.n)):
        nb, fb = a.batches, a.fixed_batches
        if per_backward is not None:
            # cost of one backward grows at most linearly with n here (host-bound at small n, and the
            # attention part is ~n^2 but a minor share at these sizes): scale the last n's cost by n/n_last
            est = per_backward * max(1.0, n / n_ref)
            left = budget.left() - 5.0
            need = est * (nb + fb * len(a.c) * a.draws)
            if need > left:
                scale = max(0.0, left / need)
                nb2, fb2 = max(4, int(nb * scale)), max(2, int(fb * scale))
                if est * (nb2 + fb2 * len(a.c) * a.draws) > left:
                    notes.append(f"n={n}: skipped, ~{need:.0f}s needed, {left:.0f}s left")
                    print(f"[variance] {notes[-1]}", flush=True)
                    continue
                notes.append(f"n={n}: batches {nb}->{nb2}, fixed {fb}->{fb2} to fit the budget")
                print(f"[variance] {notes[-1]}", flush=True)
                nb, fb = nb2, fb2
        if len(train) <= n + 1:
            notes.append(f"n={n}: corpus too short")
            continue

        def get_batch(k, n=n):
            x, y = sdata.window_batch(train, a.batch_size, n, seed=7_000_000 + k)
            return x.to(a.device), y.to(a.device)
        t0 = time.time()
        torch.manual_seed(0)
        try:
            res = V.measure(model, get_batch, cs=a.c, batches=nb, fixed_batches=fb, draws=a.draws, n=n,
                            batch_size=a.batch_size, engine="patch", label=f"gpt n={n}", progress=True)
        except Exception:  # noqa: BLE001
            notes.append(f"n={n}: failed: {traceback.format_exc(limit=3)}")
            print(f"[variance] {notes[-1]}", flush=True)
            continue
        dt = time.time() - t0
        res["meta"]["beyond_training_context"] = bool(ctx_len and n > ctx_len)
        results.append(res)
        per_backward, n_ref = dt / (nb + fb * len(a.c) * a.draws), n  # the last n's cost, scaled to the next
        common.write_json(path, {"info": info, "notes": notes, "results": V.jsonable(results)})
        try:
            print(V.format_table(res, groups=True), flush=True)
        except Exception as e:  # noqa: BLE001  (tabulate missing)
            print(f"[variance] no table ({e!r})", flush=True)
        print(f"[variance] n={n} done in {dt:.0f}s ({budget.elapsed():.0f}s of {a.budget:.0f}s)", flush=True)
    if not results:
        print("[variance] no results", flush=True)
        return 1
    print("\nrelative variance increase (b)/(a), all parameters, c x n"
          + ("" if not ctx_len else f" (training context {ctx_len}; n beyond it is RoPE extrapolation)") + ":")
    print(grid(results, "relative_increase"))
    print("\n% of attention entries cut (unmasked causal entries; in brackets: of all n x n):")
    print(grid(results, "fraction_cut"))
    common.write_json(path, {"info": info, "notes": notes, "results": V.jsonable(results)})
    try:
        V.plot(results, os.path.join(a.out, a.png_name),
               title=f"byte GPT ({meta.get('layers')}x{meta.get('embd')}, ctx {ctx_len}) on {common.corpus_name()}, "
                     f"batch size {a.batch_size}, {info.get('gpu', a.device)}")
    except Exception as e:  # noqa: BLE001
        print(f"[variance] no PNG ({e!r})", flush=True)
    return 0


def grid(results, key):
    cs = sorted({r["c"] for res in results for r in res["rows"] if r["kind"] == "uniform"})
    rows = []
    for c in cs:
        line = [f"{c:g}"]
        for res in results:
            hit = [r for r in res["rows"] if r["kind"] == "uniform" and r["c"] == c]
            if not hit:
                line.append("-")
                continue
            r = hit[0]
            if key == "fraction_cut":
                line.append(f"{100 * r['fraction_cut']:.1f} ({100 * r['fraction_cut_full']:.1f})")
            else:
                v, se = r["relative_increase"], r.get("relative_increase_se")
                line.append("-" if v is None else f"{100 * v:.3g}% ± {100 * (se or 0):.2g}")
        rows.append(line)
    heads = ["c \\ n"] + [f"{res['meta']['n']}" + (" (extrap.)" if res["meta"].get("beyond_training_context") else "")
                          for res in results]
    return common.md_table(heads, rows)


if __name__ == "__main__":
    sys.exit(main())
