"""sus_fx.calibrate: the knapsack is optimal, the policy file is valid, the budget is met."""
from __future__ import annotations

import itertools
import json
import random

import pytest

from sus_fx import calibrate as C
from sus_fx.policy import Policy

INF = float("inf")


def random_table(rng, sites=3, cs=(2.0, 4.0, 8.0, 16.0)):
    table = {}
    for s in range(sites):
        valid = rng.uniform(1e3, 1e4)
        scale = rng.uniform(0.001, 0.02)
        rows = {INF: (0.0, valid)}
        for c in cs:
            rows[c] = (scale * rng.uniform(0.5, 1.5) * 8 / c, min(valid, c * rng.uniform(20, 40)))
        table[f"layers.{s}"] = rows
    return table


def brute_force(table, budget):
    sites = list(table)
    best = None
    for combo in itertools.product(*[list(table[s].items()) for s in sites]):
        r = sum(v[0] for _, v in combo)
        k = sum(v[1] for _, v in combo)
        if r <= budget and (best is None or k < best):
            best = k
    return best


@pytest.mark.parametrize("seed", range(6))
def test_solve_is_optimal_and_within_budget(seed):
    rng = random.Random(seed)
    table = random_table(rng)
    budget = rng.uniform(0.002, 0.03)
    choice = C.solve(table, budget, resolution=20000)
    r, k = C.predicted(table, choice)
    assert r <= budget + 1e-12
    # the discretized DP rounds costs up, so it can miss the optimum only by a hair of budget
    opt = brute_force(table, budget)
    opt_tight = brute_force(table, budget * (1 - 3 * len(table) / 20000))
    assert opt <= k + 1e-9 and k <= opt_tight + 1e-9


def test_zero_budget_is_exact_everywhere():
    table = random_table(random.Random(1))
    assert set(C.solve(table, 0.0).values()) == {INF}


def test_policy_toml_round_trips_through_the_backend_parser():
    choice = {"encoder.layer.0.attention.self": 16.0, "blocks.1.attn": INF, "odd[name]*": 4.0}
    text = C.policy_toml(choice, default=INF, header="made by a test")
    pol = Policy.from_toml(text)
    for path, c in choice.items():
        assert pol.choose(path)[0] == c
    assert pol.choose("never.seen") == (INF, pol.default_label)
    assert pol.choose("blocks.1.attnX")[0] == INF and pol.choose("odd[name]*x")[0] == INF


def test_refine_table_interpolates_log_log_between_measured_c():
    table = {"a": {INF: (0.0, 1000.0), 4.0: (0.04, 40.0), 16.0: (0.01, 160.0)}}
    t = C.refine_table(table, 1)["a"]
    assert set(t) == {INF, 4.0, 8.0, 16.0}
    assert t[8.0][0] == pytest.approx(0.02) and t[8.0][1] == pytest.approx(80.0)


def test_uniform_interpolation():
    rows = [{"kind": "uniform", "c": 8.0, "relative_increase": 0.04, "kept_entries": 800.0},
            {"kind": "uniform", "c": 32.0, "relative_increase": 0.01, "kept_entries": 3200.0}]
    u = C.uniform_at(rows, 0.02)
    assert u["c"] == pytest.approx(16.0) and u["kept_entries"] == pytest.approx(1600.0)
    assert C.uniform_at(rows, 0.5) is None


def test_cli_writes_a_policy_meeting_the_budget(tmp_path, capsys):
    f = tmp_path / "tinymodel.py"
    f.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_variance import tiny_factory\n"
                 % str(__import__("os").path.dirname(__file__)))
    out, js = tmp_path / "policy.toml", tmp_path / "cal.json"
    budget = 0.05
    rc = C.cli_main(["--model", f"{f}:tiny_factory", "--n", "24", "--batch-size", "2", "--budget", str(budget),
                     "--c", "1", "2", "4", "8", "--batches", "4", "--fixed-batches", "2", "--draws", "3",
                     "--engine", "patch", "--out", str(out), "--json", str(js), "--verify", "--no-progress"])
    assert rc == 0
    pol = Policy.load(str(out))
    data = json.loads(js.read_text())
    cal = data["calibration"]
    assert cal["predicted_relative_increase"] <= budget
    assert set(cal["choice"]) == {"layers.0", "layers.1"}
    for site, c in cal["choice"].items():
        assert pol.choose(site)[0] == C._f(c)
    # the choice is the cheapest: every single-site step to a smaller c breaks the budget or keeps more
    table = C.per_site_table(data["measurement"])
    for row in data["measurement"]["rows"]:
        assert row["kind"] == "site"
    table = C.refine_table(table, cal["interpolate"])  # the candidates the solver had (default 4 between)
    assert cal["interpolate"] == 4
    choice = {s: C._f(c) for s, c in cal["choice"].items()}
    _, k0 = C.predicted(table, choice)
    for s in choice:
        for c in table[s]:
            alt = dict(choice, **{s: c})
            r1, k1 = C.predicted(table, alt)
            assert r1 > budget or k1 >= k0 - 1e-9
    cmp_ = data["comparison"]
    meas = data["verification"]
    assert [r["config"] for r in meas["rows"]][-1] == "calibrated"
    # the measured all-sites increase of the calibrated policy is near its prediction (noise: few draws)
    assert cmp_["calibrated_relative_increase"] <= 2.5 * budget
    assert "calibrated" in capsys.readouterr().out
