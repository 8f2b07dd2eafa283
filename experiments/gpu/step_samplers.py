"""Step 3 of the issue-5 GPU driver: the kernels' sampler against independent Bernoulli masks,
on the trained GPT's real activations.

Part A (op level). One real batch (a training window of n bytes) goes through the model with the
exact backward; q, k, v and dO of every attention layer are captured (fp32). For each layer and
c, `draws` SUS backwards with the Triton kernels (sus_fx/kernels/sus_bwd.py: one uniform per
(128-row block, column), lattice along 64-column tiles) and with the reference
(sus_fx/reference.py: one uniform per entry; runs on CUDA tensors too) give
E||g - g_exact||^2 for dQ, dK, dV, each against its own exact backward (c = inf), their ratio
kernel / independent (± one standard error, delta method), and the relative variance
E||g - g_exact||^2 / ||g_exact||^2. Also: how correlated neighbouring dO rows are (the cause of a
larger dV variance under the shared-uniform sampler, notes/KERNELS.md).

Part B (whole model). sus_fx.variance.measure (the paper's relative gradient variance increase)
at n, c in --c, once with the kernels and once with SUS_FX_NO_KERNELS=1 (sus_fx/kernels/dispatch.py
then leaves forward and backward to the reference, on the GPU). Calls of each implementation are
counted to show which one actually ran.

    python experiments/gpu/step_samplers.py --ckpt OUT/ckpt.pt --out OUT --budget 50
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def capture(model, x, y):
    """[(q, k, v, dO, is_causal, scale)] per attention call, fp32, from one exact fwd+bwd."""
    caps = []
    orig = F.scaled_dot_product_attention

    def patched(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, **kw):
        rec = {"q": q.detach().clone(), "k": k.detach().clone(), "v": v.detach().clone(), "causal": bool(is_causal),
               "scale": scale if scale is not None else q.shape[-1] ** -0.5, "mask": attn_mask}
        out = orig(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                   enable_gqa=enable_gqa, **kw)
        if out.requires_grad:
            out.register_hook(lambda g, rec=rec: rec.__setitem__("do", g.detach().clone()))
        caps.append(rec)
        return out
    torch.nn.functional.scaled_dot_product_attention = patched
    try:
        model.zero_grad(set_to_none=True)
        model(x, y).backward()
    finally:
        torch.nn.functional.scaled_dot_product_attention = orig
    model.zero_grad(set_to_none=True)
    return [r for r in caps if "do" in r and r["mask"] is None]


def do_correlation(do, BM=128):
    """Mean cosine of dO rows i and i+1, and mean pairwise cosine inside BM-row blocks (per head;
    BM = the kernel's block: its rows share one uniform per column)."""
    u = torch.nn.functional.normalize(do.double(), dim=-1)  # [B, H, L, D]
    lag1 = float((u[..., 1:, :] * u[..., :-1, :]).sum(-1).mean())
    L = u.shape[-2]
    BM = min(BM, L)
    nb = L // BM
    blk = u[..., : nb * BM, :].reshape(*u.shape[:-2], nb, BM, u.shape[-1])
    s = blk.sum(-2)  # sum of unit vectors per block
    pair = ((s * s).sum(-1) - BM) / (BM * (BM - 1))  # mean off-diagonal cosine
    return lag1, float(pair.mean())


def op_level(caps, cs, draws, budget, device, log, dtype=torch.float32):
    from sus_fx import reference
    from sus_fx.kernels import dispatch, sus_bwd
    rows = []
    for li, r in enumerate(caps):
        q, k, v, do = (r[n].to(dtype).contiguous() for n in ("q", "k", "v", "do"))
        causal, s = r["causal"], float(r["scale"])
        BM = sus_bwd.config(q.shape[-1], v.shape[-1], dtype)["BM"]
        fw = dispatch.forward(q, k, v, None, causal, s, 0.0) if device.startswith("cuda") else None
        out, lse = fw if fw is not None else reference.forward(q, k, v, None, causal, s)
        ex_k = sus_bwd.sus_backward(do, q, k, v, None, out, lse, causal, s, float("inf"), 0)
        ex_r = reference.backward(do, q, k, v, out, lse, None, causal, s, float("inf"), 0)[:3]
        norms = [float((e.double() ** 2).sum()) for e in ex_r]
        agree = max(float((a.double() - b.double()).norm() / max(b.double().norm(), 1e-30)) for a, b in zip(ex_k, ex_r))
        lag1, pair = do_correlation(do, BM)
        for c in cs:
            if budget.over(8.0):
                log(f"[samplers] op level: out of time at layer {li}, c={c:g}")
                return rows, False
            dev = {"kernel": [[], [], []], "independent": [[], [], []]}
            for d in range(draws):
                gk = sus_bwd.sus_backward(do, q, k, v, None, out, lse, causal, s, c, 10_000 + 7919 * d + li)
                gr = reference.backward(do, q, k, v, out, lse, None, causal, s, c, 10_000 + 7919 * d + li)[:3]
                for name, gg, ex in (("kernel", gk, ex_k), ("independent", gr, ex_r)):
                    for i in range(3):
                        dev[name][i].append(float(((gg[i].double() - ex[i].double()) ** 2).sum()))
            row = {"layer": li, "n": q.shape[-2], "H": q.shape[1], "D": q.shape[-1], "c": c, "draws": draws,
                   "dtype": str(dtype).replace("torch.", ""), "kernel_BM": BM,
                   "exact_rel_diff_kernel_vs_reference": agree, "dO_cos_lag1": lag1, "dO_cos_in_block": pair}
            for i, g in enumerate("qkv"):
                mk, sk = _mean_se(dev["kernel"][i])
                mr, sr = _mean_se(dev["independent"][i])
                ratio = mk / mr if mr > 0 else float("nan")
                rse = ratio * math.sqrt((sk / mk) ** 2 + (sr / mr) ** 2) if mk > 0 and mr > 0 else float("nan")
                row.update({f"d{g}_var_kernel": mk, f"d{g}_var_indep": mr, f"d{g}_ratio": ratio, f"d{g}_ratio_se": rse,
                            f"d{g}_relvar_kernel": mk / norms[i] if norms[i] else None,
                            f"d{g}_relvar_indep": mr / norms[i] if norms[i] else None})
            rows.append(row)
            log(f"[samplers] {row['dtype']} layer {li} c={c:g}: kernel/independent variance dQ {row['dq_ratio']:.3f}±{row['dq_ratio_se']:.2f}"
                f" dK {row['dk_ratio']:.3f}±{row['dk_ratio_se']:.2f} dV {row['dv_ratio']:.3f}±{row['dv_ratio_se']:.2f}"
                f" (dO cos lag1 {lag1:.2f}, in-block {pair:.2f}; exact agree {agree:.1e})")
    return rows, True


def _mean_se(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


class _Counter:
    """Counts calls of module.attr (wrapped in place) while active."""

    def __init__(self, module, attr):
        self.module, self.attr, self.n = module, attr, 0
        self.orig = getattr(module, attr)

        def wrapped(*a, **kw):
            self.n += 1
            return self.orig(*a, **kw)
        setattr(module, attr, wrapped)

    def restore(self):
        setattr(self.module, self.attr, self.orig)


def whole_model(model, train, n, cs, batches, fixed, device, budget, log):
    from sus_fx import data as sdata
    from sus_fx import reference
    from sus_fx import variance as V
    from sus_fx.kernels import sus_bwd

    def get_batch(i):
        x, y = sdata.window_batch(train, 1, n, seed=7_000_000 + i)
        return x.to(device), y.to(device)
    out = {}
    for name, env in (("kernel", None), ("independent (reference, SUS_FX_NO_KERNELS=1)", "1")):
        if budget.over(5.0):
            log(f"[samplers] whole model: no time left for {name}")
            break
        prev = os.environ.get("SUS_FX_NO_KERNELS")
        if env:
            os.environ["SUS_FX_NO_KERNELS"] = env
        ck, cr = _Counter(sus_bwd, "sus_backward"), _Counter(reference, "backward")
        t0 = time.time()
        try:
            torch.manual_seed(0)
            res = V.measure(model, get_batch, cs=cs, batches=batches, fixed_batches=fixed, draws=1, n=n,
                            batch_size=1, engine="patch", label=name, progress=True)
            res["meta"]["calls"] = {"sus_bwd.sus_backward": ck.n, "reference.backward": cr.n}
            used = "reference" if env else "kernel"
            if (used == "reference" and (cr.n == 0 or ck.n > 0)) or (used == "kernel" and ck.n == 0):
                res["meta"]["warning"] = (f"expected the {used} backward but calls were {res['meta']['calls']}: "
                                          "this row does not measure the sampler it names")
                log(f"[samplers] WARNING: {res['meta']['warning']}")
            out[name] = res
            log(f"[samplers] whole model, {name}: {time.time() - t0:.0f}s, calls {res['meta']['calls']}")
        except Exception:  # noqa: BLE001
            log(f"[samplers] whole model, {name} failed: {traceback.format_exc(limit=4)}")
        finally:
            ck.restore()
            cr.restore()
            if prev is None:
                os.environ.pop("SUS_FX_NO_KERNELS", None)
            else:
                os.environ["SUS_FX_NO_KERNELS"] = prev
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--c", type=float, nargs="+", default=[16, 32])
    ap.add_argument("--draws", type=int, default=32)
    ap.add_argument("--batches", type=int, default=32, help="part B: batches for the minibatch variance")
    ap.add_argument("--fixed-batches", type=int, default=24, help="part B: fixed batches, one draw each")
    ap.add_argument("--budget", type=float, default=50.0)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                    help="part A dtypes (the kernels share a uniform by 64 rows in fp32, 128 in bf16/fp16 at D<=128)")
    ap.add_argument("--json-name", default="samplers.json")
    a = ap.parse_args(argv)
    budget = common.Budget(a.budget)
    path = os.path.join(a.out, a.json_name)
    from sus_fx import data as sdata
    from sus_fx import variance as V
    model, meta = common.load_model(a.ckpt, a.device)
    model.eval()
    train, _ = common.splits()
    info = dict(common.device_info(a.device), ckpt=a.ckpt, corpus=common.corpus_name(), n=a.n,
                training_context=meta.get("context"), dtype="float32")
    doc = {"info": info, "op_level": [], "whole_model": {}, "notes": []}

    def log(msg):
        print(msg, flush=True)
    # Part A
    try:
        x, y = sdata.window_batch(train, 1, a.n, seed=7_000_000)
        caps = capture(model, x.to(a.device), y.to(a.device))
        log(f"[samplers] captured {len(caps)} attention calls, q {tuple(caps[0]['q'].shape)}")
        complete = True
        for dt in a.dtypes:
            share = budget.left() * (0.45 if dt == a.dtypes[0] and len(a.dtypes) > 1 else 0.6)
            sub = common.Budget(max(5.0, share))
            rows, complete_dt = op_level(caps, a.c, a.draws, sub, a.device, log, getattr(torch, dt))
            doc["op_level"].extend(rows)
            complete = complete and complete_dt
            doc["op_level_complete"] = complete
            common.write_json(path, doc)
        del caps
    except Exception:  # noqa: BLE001
        doc["notes"].append("op level failed: " + traceback.format_exc(limit=4))
        log(doc["notes"][-1])
    common.write_json(path, doc)
    # Part B
    try:
        res = whole_model(model, train, a.n, a.c, a.batches, a.fixed_batches, a.device, budget, log)
        doc["whole_model"] = {k: V.jsonable(v) for k, v in res.items()}
        doc["whole_model_compare"] = compare(res)
    except Exception:  # noqa: BLE001
        doc["notes"].append("whole model failed: " + traceback.format_exc(limit=4))
        log(doc["notes"][-1])
    common.write_json(path, doc)
    print_tables(doc)
    return 0


def compare(res):
    """Per c: extra variance (b) and relative increase of each sampler, ratio kernel / independent."""
    names = list(res)
    out = []
    if not names:
        return out
    cs = [r["c"] for r in res[names[0]]["rows"] if r["kind"] == "uniform"]
    for c in cs:
        line = {"c": c}
        got = {}
        for nm in names:
            hit = [r for r in res[nm]["rows"] if r["kind"] == "uniform" and r["c"] == c]
            if hit:
                got[nm] = hit[0]
                line[nm] = {"extra_variance": hit[0]["extra_variance"], "extra_variance_se": hit[0]["extra_variance_se"],
                            "relative_increase": hit[0]["relative_increase"],
                            "relative_increase_se": hit[0]["relative_increase_se"],
                            "fraction_cut": hit[0]["fraction_cut"], "kept_per_row": hit[0]["kept_per_row"]}
        if len(got) == 2:
            (k, rk), (i, ri) = list(got.items())
            bk, bi = rk["extra_variance"], ri["extra_variance"]
            sk, si = rk["extra_variance_se"], ri["extra_variance_se"]
            if bi > 0 and bk > 0:
                line["ratio_extra_variance_kernel_over_indep"] = bk / bi
                line["ratio_se"] = (bk / bi) * math.sqrt((sk / bk) ** 2 + (si / bi) ** 2)
        out.append(line)
    return out


def print_tables(doc):
    ops = doc.get("op_level") or []
    if ops:
        rows = [[r["dtype"], r["kernel_BM"], r["layer"], f"{r['c']:g}", f"{r['dq_ratio']:.3f} ± {r['dq_ratio_se']:.2f}",
                 f"{r['dk_ratio']:.3f} ± {r['dk_ratio_se']:.2f}", f"{r['dv_ratio']:.3f} ± {r['dv_ratio_se']:.2f}",
                 f"{r['dv_relvar_kernel']:.2e} / {r['dv_relvar_indep']:.2e}", f"{r['dO_cos_lag1']:.2f}",
                 f"{r['dO_cos_in_block']:.2f}"] for r in ops]
        print("\nkernel sampler / independent Bernoulli, E||g - g_exact||^2 on real q,k,v,dO "
              f"(n={doc['info']['n']}, {ops[0]['draws']} draws; ± 1 se):")
        print(common.md_table(["dtype", "kernel BM", "layer", "c", "dQ ratio", "dK ratio", "dV ratio", "dV rel. var kernel / indep",
                               "dO cos lag 1", "dO cos in kernel block"], rows))
    cmp_ = doc.get("whole_model_compare") or []
    if cmp_:
        rows = common.whole_model_compare_rows(cmp_)
        print(f"\nwhole model, relative gradient variance increase at n={doc['info']['n']} (batch size 1, fp32):")
        print(common.md_table(["c", "kernel sampler", "independent (reference)", "extra variance ratio kernel/indep"],
                              rows))


if __name__ == "__main__":
    sys.exit(main())
