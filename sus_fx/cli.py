"""The `sus-fx` command.

    sus-fx inspect FILE.py:FACTORY [--policy FILE] [--c C] [--graphs]
    sus-fx inspect package.module:factory ...
    sus-fx variance ...        (sus_fx.variance.cli_main)
    sus-fx calibrate ...       (sus_fx.calibrate.cli_main)

`inspect` calls FACTORY() (no arguments), which returns (model, example_args) or (model,
example_args, example_kwargs), runs sus_fx.inspect on it and prints the report: the table of
rewritten attention sites, the candidates left alone and why, and policy warnings. `--graphs`
also prints each captured graph's code before and after the rewrite.

Subcommands implemented in other modules are listed in EXTERNAL_COMMANDS: `sus-fx NAME ARGS...`
imports the module lazily and calls its `cli_main(argv)` with the remaining arguments (their own
--help included); its return value is the exit status.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# name -> (module, one-line help). The module must define cli_main(argv: list[str]) -> int | None.
EXTERNAL_COMMANDS: Dict[str, Tuple[str, str]] = {
    "variance": ("sus_fx.variance", "measure the variance of SUS gradients (sus_fx.variance)"),
    "calibrate": ("sus_fx.calibrate", "choose c per attention site (sus_fx.calibrate)"),
}


class CliError(Exception):
    """A usage problem: printed as `sus-fx: error: ...`, exit status 2."""


# ----------------------------------------------------------------------------------------------
# Loading FILE.py:FACTORY or module:factory

def _split_target(target: str) -> Tuple[str, str]:
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise CliError(f"expected FILE.py:FACTORY or module:factory, got {target!r}")
    return where, name


def _load_module(where: str):
    is_file = where.endswith(".py") or os.sep in where or "/" in where or os.path.isfile(where)
    if is_file:
        path = os.path.abspath(where)
        if not os.path.isfile(path):
            raise CliError(f"no such file: {where}")
        # let the file import its neighbours, as `python FILE.py` would
        sys.path.insert(0, os.path.dirname(path))
        mod_name = "_sus_fx_target_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise CliError(f"cannot load {where} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # console scripts do not put the working directory on sys.path
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and where.split(".")[0] == e.name.split(".")[0] and where.startswith(e.name):
            raise CliError(f"no module named {where!r} (for a file, write path/to/file.py:factory)") from None
        raise


def load_factory(target: str) -> Tuple[object, tuple, dict]:
    """Call the factory named by `target` and return (model, args, kwargs)."""
    where, name = _split_target(target)
    module = _load_module(where)
    factory = module
    for part in name.split("."):
        if not hasattr(factory, part):
            raise CliError(f"{where} has no attribute {name!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise CliError(f"{target} is not callable (it is a {type(factory).__name__}); it must be a factory "
                       "returning (model, example_args)")
    result = factory()
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
        raise CliError(f"{target}() must return (model, example_args) or (model, example_args, example_kwargs), "
                       f"got {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
    model, args = result[0], result[1]
    kwargs = result[2] if len(result) == 3 else {}
    if not callable(model):
        raise CliError(f"{target}(): the model ({type(model).__name__}) is not callable")
    if not isinstance(args, (tuple, list)):
        args = (args,)  # a single example input
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise CliError(f"{target}(): example_kwargs must be a dict, got {type(kwargs).__name__}")
    return model, tuple(args), dict(kwargs)


# ----------------------------------------------------------------------------------------------
# Subcommands

def _c_arg(text: str) -> float:
    from .policy import parse_c
    try:
        value = text if text.strip().lower() == "exact" else float(text)
        return parse_c(value, "--c")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--c: ", "")) from None


def _min_length_arg(text: str):
    from .policy import parse_min_length
    if text.strip().lower() == "auto":
        return "auto"  # (explicit: it replaces a policy file's min_length)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be an integer >= 0 (a key length) or "auto", got {text!r}') from None
    try:
        return parse_min_length(value, "--min-length")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("--min-length: ", "")) from None


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect
    from .policy import Policy
    try:  # read the policy first: a bad file is a usage error, not a traceback
        policy = Policy.resolve(args.policy, args.c, args.min_length)
    except (ValueError, OSError) as e:
        raise CliError(str(e)) from None
    model, ex_args, ex_kwargs = load_factory(args.target)
    report = inspect(model, *ex_args, policy=policy, **ex_kwargs)
    print(report)
    if args.graphs:
        for g in report.graphs:
            print(f"\n==== graph {g.index}: before ====\n{g.code_before}")
            print(f"\n==== graph {g.index}: after ====\n{g.code_after}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sus-fx", description="SUS backprop for attention: inspect what the `sus` torch.compile backend does.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("inspect", help="show which attention sites the sus backend rewrites in a model",
                       description="Trace FACTORY()'s model as torch.compile(backend='sus') would and print "
                                   "the rewritten attention sites, the candidates left alone, and policy warnings.")
    p.add_argument("target", metavar="FILE.py:FACTORY | module:factory",
                   help="a factory taking no arguments and returning (model, example_args) "
                        "or (model, example_args, example_kwargs)")
    p.add_argument("--policy", metavar="FILE", default=None,
                   help="policy TOML file (default: $SUS_FX_POLICY if set)")
    p.add_argument("--c", type=_c_arg, default=None, metavar="C",
                   help='SUS parameter for sites no policy rule matches: a number > 0 or "exact"')
    p.add_argument("--min-length", type=_min_length_arg, default=None, metavar="N",
                   help='key length below which a site is left exact: an integer >= 0 or "auto" (default: the '
                        "policy file's, else auto: 8192 on CUDA, 0 on CPU)")
    p.add_argument("--graphs", action="store_true", help="also print each graph's code before and after")
    p.set_defaults(func=cmd_inspect)

    for name, (module, help_text) in EXTERNAL_COMMANDS.items():
        # listed for --help; main() dispatches these before argparse sees their arguments
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def run_external(name: str, argv: List[str]) -> int:
    module_name = EXTERNAL_COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise CliError(f"'sus-fx {name}' is not available: module {module_name} is not installed") from None
        raise
    entry: Optional[Callable] = getattr(module, "cli_main", None)
    if entry is None:
        raise CliError(f"'sus-fx {name}': {module_name} has no cli_main(argv)")
    status = entry(argv)
    return int(status or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in EXTERNAL_COMMANDS:
            return run_external(argv[0], argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except CliError as e:
        print(f"sus-fx: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
