"""The sus-fx command line."""
import os
import shutil
import subprocess
import sys
import textwrap
import types

import pytest

from sus_fx import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "inspect_model.py")
EXAMPLE_POLICY = os.path.join(REPO, "examples", "policy.toml")

FACTORIES = textwrap.dedent("""
    import torch

    def attention(q, k, v, scale=1.0):
        return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v

    def with_kwargs():
        q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
        return attention, (q, k, v), {"scale": 0.5}

    def single_tensor():
        return (lambda x: torch.softmax(x @ x.transpose(-1, -2), -1) @ x), torch.randn(1, 4, 8)

    def wrong():
        return 3

    not_a_function = 4
""")


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "sus_fx.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_inspect_example_file_with_policy_and_graphs():
    proc = run_cli("inspect", "examples/inspect_model.py:make_model", "--policy", "examples/policy.toml", "--graphs")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "2 attention sites rewritten" in out
    for text in ("path", "bwd FLOPs exact", "layers.0", "layers.1", "rule 1 (layers.0.*)", "rule 2 (layers.*)"):
        assert text in out, text
    assert "policy: examples/policy.toml" in out
    assert "==== graph 0: before ====" in out and "==== graph 0: after ====" in out
    assert "torch.ops.sus.attention" in out.split("==== graph 0: after ====")[1]
    assert "torch.ops.sus.attention" not in out.split("==== graph 0: after ====")[0]


def test_console_script_and_module_factory(tmp_path):
    # on PATH, or next to the interpreter (a venv's bin/ when `make test` runs .venv/bin/python unactivated)
    exe = shutil.which("sus-fx") or shutil.which("sus-fx", path=os.path.dirname(sys.executable))
    assert exe, "the sus-fx console script is not installed: run pip install -e ."
    (tmp_path / "my_factories.py").write_text(FACTORIES)
    proc = subprocess.run([exe, "inspect", "my_factories:with_kwargs", "--c", "exact"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 attention site rewritten" in proc.stdout and "option c=exact" in proc.stdout


def test_main_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SUS_FX_POLICY", raising=False)
    f = tmp_path / "factories.py"
    f.write_text(FACTORIES)
    assert cli.main(["inspect", f"{f}:single_tensor", "--c", "4"]) == 0
    out = capsys.readouterr().out
    assert "1 attention site rewritten" in out and "option c=4" in out and "==== graph" not in out


@pytest.mark.parametrize("args, message", [
    (["inspect", "no_colon_here"], "expected FILE.py:FACTORY or module:factory"),
    (["inspect", "missing_file.py:f"], "no such file: missing_file.py"),
    (["inspect", "{f}:nope"], "has no attribute 'nope'"),
    (["inspect", "{f}:not_a_function"], "is not callable"),
    (["inspect", "{f}:wrong"], r"must return \(model, example_args\)"),
    (["inspect", "surely_not_a_module_xyz:f"], "no module named 'surely_not_a_module_xyz'"),
    (["inspect", "{f}:with_kwargs", "--policy", "{missing}"], "policy file not found"),
    (["inspect", "{f}:with_kwargs", "--policy", "{bad}"], r"bad.toml: rule 1 \(match 'a'\): key 'c'"),
])
def test_usage_errors(tmp_path, capsys, args, message):
    f = tmp_path / "factories.py"
    f.write_text(FACTORIES)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nmatch = "a"\nc = -2\n')
    args = [a.format(f=f, missing=tmp_path / "missing.toml", bad=bad) for a in args]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sus-fx: error:")
    import re
    assert re.search(message, err), err


def test_bad_c_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["inspect", "x.py:f", "--c", "0"])
    assert e.value.code == 2
    assert 'c must be a number > 0 or "exact"' in capsys.readouterr().err


def test_external_subcommands_dispatch(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("sus_fx.calibrate")
    fake.cli_main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "sus_fx.calibrate", fake)
    assert cli.main(["calibrate", "--help", "x"]) == 3  # its own --help reaches it
    assert seen == [["--help", "x"]]
    # a subcommand whose module is not installed: a clear error
    monkeypatch.setitem(cli.EXTERNAL_COMMANDS, "ghost", ("sus_fx.ghost_module_xyz", "not here"))
    assert cli.main(["ghost", "a"]) == 2
    assert "'sus-fx ghost' is not available: module sus_fx.ghost_module_xyz is not installed" in capsys.readouterr().err
    # both real hooks are listed in --help
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "inspect" in out and "variance" in out and "calibrate" in out
