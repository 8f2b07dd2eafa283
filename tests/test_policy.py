"""Policy files: parsing, precedence, every error, rule tracking."""
import math
import os

import pytest

from sus_fx.policy import DEFAULT_C, ENV_VAR, Policy, parse_c

INF = math.inf
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "policy.toml")


def write(tmp_path, text, name="policy.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_example_policy_loads_and_first_match_wins():
    pol = Policy.load(EXAMPLE)
    assert pol.default_c == 32.0
    assert [r.match for r in pol.rules] == ["layers.0.*", "layers.*"]
    # layers.0.* is listed first, so it wins over layers.* for layer 0
    assert pol.choose("layers.0.attn") == (INF, "rule 1 (layers.0.*)")
    assert pol.choose("layers.3.attn") == (16.0, "rule 2 (layers.*)")
    assert pol.choose("encoder.attn") == (32.0, "default (policy.toml)")


def test_issue_example(tmp_path):
    path = write(tmp_path, 'c = 32\n[[rule]]\nmatch = "model.layers.0.*"\nc = "exact"\n'
                           '[[rule]]\nmatch = "model.layers.*"\nc = 16\n')
    pol = Policy.load(path)
    assert pol.choose("model.layers.0.self_attn")[0] == INF
    assert pol.choose("model.layers.10.self_attn")[0] == 16.0
    assert pol.choose("lm_head")[0] == 32.0
    assert pol.choose("")[0] == 32.0  # unknown module path: default


def test_order_matters(tmp_path):
    # the general rule first shadows the specific one
    pol = Policy.load(write(tmp_path, '[[rule]]\nmatch = "*"\nc = 4\n[[rule]]\nmatch = "a.*"\nc = 8\n'))
    assert pol.choose("a.b") == (4.0, "rule 1 (*)")
    assert [r.index for r in pol.unmatched_rules()] == [2]


def test_glob_is_case_sensitive_and_star_crosses_dots(tmp_path):
    pol = Policy.load(write(tmp_path, 'c = 2\n[[rule]]\nmatch = "Model.*.attn"\nc = 5\n'))
    assert pol.choose("Model.layers.3.attn")[0] == 5.0
    assert pol.choose("model.layers.3.attn")[0] == 2.0


def test_defaults_and_numbers(tmp_path):
    assert Policy().choose("x") == (DEFAULT_C, "default")
    pol = Policy.load(write(tmp_path, "c = inf\n[[rule]]\nmatch = \"a\"\nc = 3\n"))
    assert pol.default_c == INF and pol.choose("a")[0] == 3.0 and isinstance(pol.choose("a")[0], float)
    assert Policy.load(write(tmp_path, 'c = "EXACT"\n')).default_c == INF
    assert Policy.load(write(tmp_path, "c = 0.5\n")).default_c == 0.5


def test_option_c_replaces_the_default_but_not_rules(tmp_path):
    pol = Policy.load(write(tmp_path, 'c = 32\n[[rule]]\nmatch = "a.*"\nc = 4\n'))
    with_c = pol.with_default(8)
    assert with_c.choose("a.x") == (4.0, "rule 1 (a.*)")
    assert with_c.choose("b") == (8.0, "option c=8")
    assert pol.with_default("exact").choose("b") == (INF, "option c=exact")
    assert pol.with_default(None).choose("b") == (32.0, "default (policy.toml)")
    assert Policy.resolve(False, 16).choose("anything") == (16.0, "option c=16")


def test_hits_are_tracked_per_copy(tmp_path):
    pol = Policy.load(write(tmp_path, '[[rule]]\nmatch = "a"\nc = 1\n[[rule]]\nmatch = "b"\nc = 2\n'))
    pol.choose("a")
    pol.choose("a")
    assert pol.hits == {1: 2, 2: 0}
    assert [r.match for r in pol.unmatched_rules()] == ["b"]
    assert pol.warnings() == [f"policy rule 2 (b) in {pol.source} matched no attention site"]
    fresh = pol.with_default()
    assert fresh.hits == {1: 0, 2: 0}


def test_env_var_and_resolve(tmp_path, monkeypatch):
    path = write(tmp_path, 'c = 7\n[[rule]]\nmatch = "x"\nc = "exact"\n')
    monkeypatch.setenv(ENV_VAR, path)
    assert Policy.resolve().choose("y")[0] == 7.0
    assert Policy.resolve(None, 3).choose("y")[0] == 3.0
    assert Policy.resolve(False).choose("y")[0] == DEFAULT_C  # False ignores the environment
    other = write(tmp_path, "c = 5\n", "other.toml")
    assert Policy.resolve(other).choose("y")[0] == 5.0  # an explicit policy wins over the env var
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml.*SUS_FX_POLICY"):
        Policy.resolve()
    monkeypatch.setenv(ENV_VAR, "")
    assert Policy.resolve().choose("y")[0] == DEFAULT_C
    with pytest.raises(TypeError, match="policy must be"):
        Policy.resolve(12)


@pytest.mark.parametrize("text, pattern", [
    # top level
    ("cc = 3\n", r"unknown key 'cc' at top level"),
    ("c = 0\n", r"top-level key 'c'.*> 0"),
    ("c = -1\n", r"top-level key 'c'.*> 0"),
    ("c = nan\n", r"top-level key 'c'.*nan"),
    ("c = true\n", r"top-level key 'c'.*bool"),
    ('c = "fast"\n', r"top-level key 'c'.*'fast'"),
    ("c = [1]\n", r"top-level key 'c'.*list"),
    ('[rule]\nmatch = "a"\nc = 1\n', r"write \[\[rule\]\], not \[rule\]"),
    ('rule = 3\n', r"'rule' must be an array of tables"),
    ('rule = [1]\n', r"rule 1: must be a table"),
    # rules: the file, the rule (index and match) and the key
    ('[[rule]]\nmatch = "a"\nc = 1\n[[rule]]\nmatch = "b.*"\nc = 0\n', r"rule 2 \(match 'b\.\*'\): key 'c'.*> 0"),
    ('[[rule]]\nmatch = "a"\nc = -3.5\n', r"rule 1 \(match 'a'\): key 'c'"),
    ('[[rule]]\nmatch = "a"\nc = nan\n', r"rule 1 \(match 'a'\): key 'c'"),
    ('[[rule]]\nmatch = "a"\nc = false\n', r"rule 1 \(match 'a'\): key 'c'.*bool"),
    ('[[rule]]\nmatch = "a"\nc = "exactly"\n', r"rule 1 \(match 'a'\): key 'c'.*'exactly'"),
    ('[[rule]]\nmatch = "a"\nc = 1\nweight = 2\n', r"rule 1 \(match 'a'\): unknown key 'weight'"),
    ('[[rule]]\nmatch = "a"\n', r"rule 1 \(match 'a'\): missing key 'c'"),
    ('[[rule]]\nc = 3\n', r"rule 1: missing key 'match'"),
    ('[[rule]]\nmatch = 3\nc = 3\n', r"rule 1: key 'match' must be a string"),
    ('[[rule]]\nmatch = ""\nc = 3\n', r"rule 1 \(match ''\): key 'match' is empty"),
    ("c = 3\nc = 4\n", r"not valid TOML"),
])
def test_errors_name_file_rule_and_key(tmp_path, text, pattern):
    path = write(tmp_path, text, "bad_policy.toml")
    with pytest.raises(ValueError, match=pattern) as err:
        Policy.load(path)
    assert "bad_policy.toml" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        Policy.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("value", [0, -1, float("nan"), True, "soon", None, [4]])
def test_parse_c_rejects(value):
    with pytest.raises(ValueError, match="where: c must be"):
        parse_c(value, "where")


def test_parse_c_accepts():
    assert parse_c(16, "x") == 16.0 and parse_c(0.25, "x") == 0.25
    assert parse_c("exact", "x") == INF and parse_c(INF, "x") == INF
