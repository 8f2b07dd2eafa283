"""The benchmark scripts' bookkeeping (CPU): what they report must be what they measured."""
import importlib.util
import os

import pytest


def _load(name):
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_measure_rounds_alternates_methods_and_reports_medians(monkeypatch):
    att = _load("attention")
    calls = []
    times = {"a": iter([5.0, 1.0, 3.0]), "b": iter([2.0, 9.0, 4.0])}

    def fake_measure(fn, q, k, v, do, budget_ms=150):
        name = fn()
        calls.append(name)
        t = next(times[name])
        return dict(fwd=t / 2, bwd=t / 2, fwdbwd=t, peak_mb=len(calls))

    monkeypatch.setattr(att, "measure", fake_measure)
    out = dict(att.measure_rounds([("a", lambda: "a"), ("b", lambda: "b")], None, None, None, None,
                                  rounds=3, graph=False, case={}))
    assert calls == ["a", "b", "a", "b", "a", "b"]  # A B A B, not A A B B
    assert out["a"]["fwdbwd"] == 3.0 and out["b"]["fwdbwd"] == 4.0
    assert out["a"]["fwdbwd_rounds"] == [5.0, 1.0, 3.0]
    assert out["b"]["peak_mb"] == 6  # the largest peak of any round


def test_measure_rounds_drops_a_method_that_raises(monkeypatch):
    att = _load("attention")

    def fake_measure(fn, q, k, v, do, budget_ms=150):
        if fn() == "bad":
            raise RuntimeError("no kernel for this shape")
        return dict(fwd=1.0, bwd=1.0, fwdbwd=2.0, peak_mb=1.0)

    monkeypatch.setattr(att, "measure", fake_measure)
    out = att.measure_rounds([("bad", lambda: "bad"), ("ok", lambda: "ok")], None, None, None, None,
                             rounds=2, graph=False, case={})
    assert [name for name, _ in out] == ["ok"]
