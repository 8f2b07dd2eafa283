"""Choose c per attention site to meet a variance budget with the fewest kept entries.

    sus-fx calibrate --model FILE.py:FACTORY --n 2048 --budget 0.01 --out policy.toml [--verify]
    sus-fx calibrate --from-json variance.json --budget 0.01 --out policy.toml

Method:
1. Measure, per site s and candidate c (the others exact), the relative variance increase
   r_s(c) = extra variance / minibatch variance (sus_fx.variance.measure, per_site=True) and the
   kept entries K_s(c) per batch (sus_fx.stats). "exact" is always a candidate: r = 0, K = the
   site's unmasked entries.
   With --interpolate k (default 4), k more c values between measured neighbours are candidates,
   their r and K interpolated log-log (both are smooth and monotone in c).
2. Minimize sum_s K_s(c_s) subject to sum_s r_s(c_s) <= budget: a multiple-choice knapsack,
   solved exactly by dynamic programming over the budget discretized into `resolution` steps,
   each r rounded up (so the chosen policy's predicted total never exceeds the budget).
   The total of per-site increases predicts the all-sites increase because masks of different
   sites are independent: cross terms vanish to first order (checked by --verify).
3. Write a policy TOML the backend reads (sus_fx.policy): top-level `c` (the default for sites
   the calibration did not see; "exact" unless --default-c), one `[[rule]]` per site with its
   exact module path as `match`.
4. --verify: measure the calibrated policy with all sites sampled at once, and uniform c values
   for comparison; report kept entries of the calibrated policy against a uniform c with the same
   measured variance (log-log interpolation of the uniform curve).

The op takes one scalar c per call, so calibration is per site (layer), not per head.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

INF = float("inf")


def _f(c) -> float:
    if isinstance(c, str):
        return INF if c.lower() in ("exact", "inf") else float(c)
    return INF if c is None else float(c)


def _fmt(c: float) -> str:
    return "exact" if math.isinf(c) else f"{c:g}"


def per_site_table(result: Dict[str, Any]) -> Dict[str, Dict[float, Tuple[float, float]]]:
    """From a measure() result with per-site rows: {site: {c: (relative_increase, kept_entries)}},
    with the exact choice (0, valid entries) added."""
    table: Dict[str, Dict[float, Tuple[float, float]]] = {}
    for row in result["rows"]:
        if row.get("kind") != "site":
            continue
        s, c = row["site"], _f(row["c"])
        table.setdefault(s, {})
        if math.isinf(c):
            continue
        rel = max(0.0, float(row["relative_increase"] or 0.0))
        table[s][c] = (rel, float(row["kept_entries"]))
        table[s][INF] = (0.0, float(row["valid_entries"]))
    if not table:
        raise ValueError("no per-site rows: measure with per_site=True (sus-fx variance --per-site)")
    return table


def refine_table(table: Dict[str, Dict[float, Tuple[float, float]]], points: int = 4
                 ) -> Dict[str, Dict[float, Tuple[float, float]]]:
    """Add `points` c values between each pair of measured ones (geometric spacing, 3 significant
    digits), with r and K interpolated log-log (both are smooth and monotone in c: r ~ 1/c and
    K ~ c for small c). Lets the solver pick c off the measured grid."""
    out = {}
    for s, rows in table.items():
        new = dict(rows)
        fin = sorted(c for c in rows if not math.isinf(c))
        for c0, c1 in zip(fin, fin[1:]):
            (r0, k0), (r1, k1) = rows[c0], rows[c1]
            for i in range(1, points + 1):
                t = i / (points + 1)
                c = float(f"{math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0))):.3g}")
                if c in new or not (c0 < c < c1):
                    continue
                tt = (math.log(c) - math.log(c0)) / (math.log(c1) - math.log(c0))
                r = math.exp(math.log(r0) + tt * (math.log(r1) - math.log(r0))) if r0 > 0 and r1 > 0 \
                    else r0 + tt * (r1 - r0)
                k = math.exp(math.log(k0) + tt * (math.log(k1) - math.log(k0))) if k0 > 0 and k1 > 0 \
                    else k0 + tt * (k1 - k0)
                new[c] = (r, k)
        out[s] = dict(sorted(new.items()))
    return out


def solve(table: Dict[str, Dict[float, Tuple[float, float]]], budget: float,
          resolution: int = 4000) -> Dict[str, float]:
    """Exact multiple-choice knapsack on the discretized budget: {site: c} minimizing total kept
    entries with sum of (rounded-up) relative increases <= budget."""
    if budget < 0:
        raise ValueError("budget must be >= 0")
    sites = list(table)
    unit = budget / resolution if budget > 0 else 1.0
    Bmax = resolution if budget > 0 else 0
    # dp[b] = (min kept, choices) using cost exactly <= b units
    dp: List[Optional[Tuple[float, Tuple[float, ...]]]] = [(0.0, ())] * (Bmax + 1)
    for s in sites:
        opts = [(c, (0 if r <= 0 else math.ceil(r / unit - 1e-9)), k) for c, (r, k) in table[s].items()]
        new: List[Optional[Tuple[float, Tuple[float, ...]]]] = [None] * (Bmax + 1)
        for b in range(Bmax + 1):
            best = None
            for c, cost, k in opts:
                if cost > b or dp[b - cost] is None:
                    continue
                tot = dp[b - cost][0] + k
                if best is None or tot < best[0] - 1e-9 or (abs(tot - best[0]) <= 1e-9 and c > best[1][-1]):
                    best = (tot, dp[b - cost][1] + (c,))
            new[b] = best
        dp = new
    best = dp[Bmax]
    if best is None:  # cannot happen: exact everywhere costs 0
        raise RuntimeError("no feasible policy")
    return dict(zip(sites, best[1]))


def predicted(table, choice) -> Tuple[float, float]:
    """(sum of per-site relative increases, sum of kept entries) of a choice."""
    return (sum(table[s][c][0] for s, c in choice.items()), sum(table[s][c][1] for s, c in choice.items()))


def _glob_escape(path: str) -> str:
    import re
    return re.sub(r"([\[\]*?])", r"[\1]", path)


def policy_toml(choice: Dict[str, float], default: float = INF, header: str = "") -> str:
    """The policy file for sus_fx.policy: top-level default c, one [[rule]] per site."""
    lines = []
    for h in header.splitlines():
        lines.append(f"# {h}" if h else "#")
    lines.append(f"c = {_toml_c(default)}")
    for s, c in choice.items():
        lines += ["", "[[rule]]", f"match = {json.dumps(_glob_escape(s))}", f"c = {_toml_c(c)}"]
    return "\n".join(lines) + "\n"


def _toml_c(c: float) -> str:
    c = float(c)
    if math.isinf(c):
        return '"exact"'
    return repr(c) if c != int(c) else str(int(c))


def load_policy(path: str):
    """A policy file as a path -> c callable (sus_fx.policy's first-match-wins rules)."""
    from .policy import Policy
    pol = Policy.load(path)
    return lambda p: pol.choose(p)[0]


def uniform_at(rows: List[Dict[str, Any]], rel: float) -> Optional[Dict[str, float]]:
    """Log-log interpolation of the uniform curve (kept entries vs relative increase) at `rel`:
    {'c': ..., 'kept_entries': ...}; None if `rel` is outside the measured range."""
    pts = sorted((r["relative_increase"], r["kept_entries"], _f(r["c"])) for r in rows
                 if r["kind"] == "uniform" and not math.isinf(_f(r["c"])) and (r["relative_increase"] or 0) > 0)
    for (r0, k0, c0), (r1, k1, c1) in zip(pts, pts[1:]):
        if r0 <= rel <= r1:
            t = (math.log(rel) - math.log(r0)) / (math.log(r1) - math.log(r0)) if r1 > r0 else 0.0
            return {"c": math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0))),
                    "kept_entries": math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0)))}
    return None


def calibrate(result: Dict[str, Any], budget: float = 0.01, resolution: int = 4000,
              interpolate: int = 0) -> Dict[str, Any]:
    """Per-site choice of c. interpolate > 0: also consider that many c values between measured
    neighbours (log-log interpolation, see refine_table)."""
    table = per_site_table(result)
    if interpolate > 0:
        table = refine_table(table, interpolate)
    choice = solve(table, budget, resolution)
    pr, pk = predicted(table, choice)
    valid = sum(table[s][INF][1] for s in table)
    return {"budget": budget, "interpolate": interpolate, "choice": {s: _fmt(c) for s, c in choice.items()},
            "predicted_relative_increase": pr, "predicted_kept_entries": pk, "valid_entries": valid,
            "predicted_fraction_cut": 1 - pk / valid if valid else 0.0,
            "per_site": {s: {_fmt(c): {"relative_increase": r, "kept_entries": k} for c, (r, k) in sorted(v.items())}
                         for s, v in table.items()}}


def build_parser() -> argparse.ArgumentParser:
    from .variance import _parse_c
    ap = argparse.ArgumentParser(prog="sus-fx calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="FILE.py:FACTORY (protocol: sus-fx variance --help)")
    src.add_argument("--from-json", help="a sus-fx variance --per-site JSON (first result, or --n picks one)")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--budget", type=float, default=0.01, help="total relative variance increase (0.01 = 1%%)")
    ap.add_argument("--c", type=_parse_c, nargs="+", default=[2, 4, 8, 16, 32, 64, 128],
                    help="candidate c values per site (exact is always a candidate)")
    ap.add_argument("--uniform-c", type=_parse_c, nargs="+", default=None,
                    help="uniform c values measured for comparison with --verify (default: --c)")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--fixed-batches", type=int, default=4)
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--engine", choices=["patch", "compile"], default="compile")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--factory-arg", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--default-c", type=_parse_c, default=INF, help="policy default for unseen sites (exact)")
    ap.add_argument("--resolution", type=int, default=4000)
    ap.add_argument("--interpolate", type=int, default=4,
                    help="c values considered between measured neighbours (log-log interpolation); 0: grid only")
    ap.add_argument("--out", required=True, help="policy TOML to write")
    ap.add_argument("--json", help="write the calibration (and verification) here")
    ap.add_argument("--verify", action="store_true", help="measure the calibrated policy against uniform c")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    import torch
    from . import variance as V
    a = build_parser().parse_args(argv)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    factory = model = get_batch = loss_fn = None
    if a.from_json:
        with open(a.from_json) as f:
            data = json.load(f)
        results = data if isinstance(data, list) else [data]
        if a.n is not None:
            results = [r for r in results if r["meta"].get("n") == a.n] or results
        result = results[0]
    else:
        factory = V.load_factory(a.model)
        extra = V.parse_factory_args(a.factory_arg)
        torch.manual_seed(a.seed)
        model, get_batch, loss_fn = V.call_factory(factory, n=a.n, batch_size=a.batch_size, device=device, **extra)
        result = V.measure(model, get_batch, cs=[], per_site=True, site_cs=a.c, batches=a.batches,
                           fixed_batches=a.fixed_batches, draws=a.draws, loss_fn=loss_fn, engine=a.engine,
                           batch_size=a.batch_size, n=a.n, seed=a.seed, progress=not a.no_progress,
                           label="per-site")
    cal = calibrate(result, a.budget, a.resolution, a.interpolate)
    meta = result["meta"]
    header = (f"sus-fx calibrate: budget {100 * a.budget:g}% total relative gradient variance increase\n"
              f"model {a.model or a.from_json}, n={meta.get('n')}, batch size {meta.get('batch_size')}\n"
              f"predicted: +{100 * cal['predicted_relative_increase']:.3g}% variance, "
              f"{100 * cal['predicted_fraction_cut']:.2f}% of attention entries cut")
    with open(a.out, "w") as f:
        f.write(policy_toml({s: _f(c) for s, c in cal["choice"].items()}, a.default_c, header))
    from tabulate import tabulate
    rows = [[s, c, f"{100 * cal['per_site'][s][c]['relative_increase']:.3g}%",
             f"{cal['per_site'][s][c]['kept_entries']:.4g}"] for s, c in cal["choice"].items()]
    print(tabulate(rows, headers=["site", "c", "rel. variance increase", "kept entries/batch"], tablefmt="github"))
    print(f"\npredicted total: +{100 * cal['predicted_relative_increase']:.3g}% variance (budget "
          f"{100 * a.budget:g}%), {100 * cal['predicted_fraction_cut']:.2f}% of entries cut; wrote {a.out}")
    out = {"calibration": cal, "measurement": result}
    if a.verify:
        if model is None:
            raise SystemExit("sus-fx calibrate: --verify needs --model")
        pol = load_policy(a.out)
        ucs = a.uniform_c or a.c
        ver = V.measure(model, get_batch, cs=ucs, policies={"calibrated": pol}, batches=a.batches,
                        fixed_batches=a.fixed_batches, draws=a.draws, loss_fn=loss_fn, engine=a.engine,
                        batch_size=a.batch_size, n=a.n, seed=a.seed + 1, progress=not a.no_progress,
                        label="verify")
        out["verification"] = ver
        out["comparison"] = compare(ver)
        print()
        print(V.format_table(ver))
        print("\n" + describe_comparison(out["comparison"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(V.jsonable(out), f, indent=1)
    return 0


def compare(ver: Dict[str, Any]) -> Dict[str, Any]:
    cal = [r for r in ver["rows"] if r["kind"] == "policy"][0]
    u = uniform_at(ver["rows"], cal["relative_increase"])
    res = {"calibrated_relative_increase": cal["relative_increase"],
           "calibrated_relative_increase_se": cal["relative_increase_se"],
           "calibrated_kept_entries": cal["kept_entries"], "calibrated_fraction_cut": cal["fraction_cut"],
           "uniform_at_same_variance": u}
    if u:
        res["kept_ratio_calibrated_over_uniform"] = cal["kept_entries"] / u["kept_entries"]
    return res


def describe_comparison(cmp: Dict[str, Any]) -> str:
    s = (f"calibrated policy, measured: +{100 * cmp['calibrated_relative_increase']:.3g}% variance, "
         f"{cmp['calibrated_kept_entries']:.4g} kept entries/batch ({100 * cmp['calibrated_fraction_cut']:.2f}% cut)")
    u = cmp.get("uniform_at_same_variance")
    if u:
        s += (f"\nuniform c at the same measured variance: c ~ {u['c']:.3g}, {u['kept_entries']:.4g} kept entries; "
              f"calibrated/uniform = {cmp['kept_ratio_calibrated_over_uniform']:.3f}")
    else:
        s += "\n(the calibrated variance lies outside the measured uniform range: no interpolation)"
    return s


if __name__ == "__main__":
    sys.exit(cli_main())
