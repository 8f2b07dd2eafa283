"""Per-site choice of the SUS parameter `c`: a small TOML policy file.

    c = 32                       # default for sites no rule matches (optional; 32 if absent)
    min_length = 8192            # optional: see "Short sequences" below (top-level keys come
                                 # before the first [[rule]]: TOML puts later keys in that rule)
    [[rule]]                     # rules are tried in order; the first match wins
    match = "model.layers.0.*"   # fnmatch glob (case-sensitive) on the site's module path
    c = "exact"                  # a number > 0, or "exact" (= float("inf"): exact backward)

    [[rule]]
    match = "model.layers.*"
    c = 16

The module path of a site is the innermost module that produced it, as the passes read it from
Dynamo's `nn_module_stack` (e.g. "model.layers.0.self_attn"; "" when the attention sits in the
compiled function or root module itself). `*` also matches dots, so "model.layers.*" covers
every layer.

Precedence (backend, `sus_fx.make_backend`, `sus_fx.inspect`, CLI):
    1. the first `[[rule]]` whose `match` fits the site's path;
    2. else the `c` option (``options={"c": ...}``, ``make_backend(c=...)``, ``--c``): it
       replaces the file's top-level default;
    3. else the file's top-level `c`;
    4. else 32 (the op's default).
The policy comes from the `policy` option, else from the file named by the environment variable
SUS_FX_POLICY; ``policy=False`` ignores the environment variable.

Short sequences (`min_length`). Below some key length SUS saves no time: its backward is a few
Python launches more than the dense one, and on a step bound by host time those cost more than the
sparse kernels save. An attention site whose key length is below `min_length` is left exactly as
it was (exact attention, the inspect report says why). Precedence: the `min_length` option
(backend, make_backend, inspect, CLI), else the file's top-level `min_length`, else "auto":
AUTO_MIN_LENGTH for the site's device (CUDA: 8192, from GPT-124M at batch 1 on an H200 against
inductor, every site rewritten: 0.69-0.74x at 2k, 0.82-0.98x at 4k, 1.20-1.24x at 8k, the short
steps bound by the host, whose speed differed between machines; CPU: 0, where the reference
backward serves correctness, not speed). 0 rewrites every site. A symbolic key length (dynamic
shapes) cannot be compared when the graph is compiled: such a site is rewritten (its report shows
the symbolic shape).

Every problem in a file is a ValueError naming the file, the rule (its 1-based index and its
`match`) and the key.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

try:  # Python 3.11+
    import tomllib as _toml
except ImportError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ImportError:
        _toml = None

DEFAULT_C = 32.0
ENV_VAR = "SUS_FX_POLICY"

_TOP_KEYS = ("c", "rule", "min_length")
# The key length from which attention on a device type is rewritten when min_length is "auto" (see
# the module doc). Device types not listed: 0.
AUTO_MIN_LENGTH: Dict[str, int] = {"cuda": 8192}
_RULE_KEYS = ("match", "c")

PolicyLike = Union["Policy", str, os.PathLike, None, bool]


def parse_c(value: Any, where: str) -> float:
    """A c value: a real number > 0 (inf allowed) or the string "exact" (-> inf).

    `where` names the value's origin for the error message, e.g. "policy.toml: rule 2 (match
    'a.*'): key 'c'"."""
    if isinstance(value, str):
        if value.strip().lower() == "exact":
            return math.inf
        raise ValueError(f"{where}: c must be a number > 0 or \"exact\", got the string {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: c must be a number > 0 or \"exact\", got {type(value).__name__} {value!r}")
    c = float(value)
    if math.isnan(c) or c <= 0:
        raise ValueError(f"{where}: c must be a number > 0 or \"exact\", got {value!r}")
    return c


def parse_min_length(value: Any, where: str) -> Optional[int]:
    """A min_length value: an int >= 0, or "auto" / None (-> None: the device's default)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: min_length must be an integer >= 0 (a key length) or \"auto\", got {value!r}")
    return int(value)


def format_c(c: float) -> str:
    if math.isinf(c):
        return "exact"
    return f"{c:g}"


@dataclasses.dataclass(frozen=True)
class Rule:
    index: int  # 1-based position in the file
    match: str
    c: float

    @property
    def label(self) -> str:
        """What a site's `rule` field says when this rule set its c."""
        return f"rule {self.index} ({self.match})"


class Policy:
    """An ordered list of rules plus a default c.

    `choose(path)` returns (c, label) and counts which rules matched; `unmatched_rules()` lists
    the rules that matched nothing so far. Counting is per Policy object: the backend and
    `inspect` work on a fresh copy (`with_default`) per compile."""

    def __init__(self, rules: Tuple[Rule, ...] = (), default_c: Optional[float] = None,
                 source: Optional[str] = None, default_label: Optional[str] = None,
                 min_length: Optional[int] = None):
        self.rules = tuple(rules)
        self.min_length = min_length  # None: "auto" (AUTO_MIN_LENGTH by device)
        self.default_c = DEFAULT_C if default_c is None else float(default_c)
        self.source = source
        if default_label is None:
            default_label = f"default ({os.path.basename(source)})" if (source and default_c is not None) \
                else "default"
        self.default_label = default_label
        self.hits: Dict[int, int] = {r.index: 0 for r in self.rules}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Policy":
        """Read and validate a TOML policy file."""
        path = os.fspath(path)
        if _toml is None:  # pragma: no cover - Python 3.10 without tomli
            raise RuntimeError(f"{path}: reading a policy file on Python < 3.11 needs the 'tomli' package "
                               "(pip install tomli)")
        try:
            with open(path, "rb") as f:
                data = _toml.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"sus-fx policy file not found: {path}") from None
        except _toml.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
        return cls.from_dict(data, source=path)

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> "Policy":
        if _toml is None:  # pragma: no cover
            raise RuntimeError("parsing a policy on Python < 3.11 needs the 'tomli' package (pip install tomli)")
        try:
            data = _toml.loads(text)
        except _toml.TOMLDecodeError as e:
            raise ValueError(f"{source}: not valid TOML: {e}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Policy":
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a policy must be a table, got {type(data).__name__}")
        for key in data:
            if key not in _TOP_KEYS:
                raise ValueError(f"{source}: unknown key {key!r} at top level (allowed: c, min_length, [[rule]])")
        default_c = parse_c(data["c"], f"{source}: top-level key 'c'") if "c" in data else None
        min_length = parse_min_length(data.get("min_length"), f"{source}: top-level key 'min_length'")
        raw_rules = data.get("rule", [])
        if isinstance(raw_rules, Mapping):
            raise ValueError(f"{source}: key 'rule' must be an array of tables: write [[rule]], not [rule]")
        if not isinstance(raw_rules, list):
            raise ValueError(f"{source}: key 'rule' must be an array of tables ([[rule]]), "
                             f"got {type(raw_rules).__name__}")
        rules: List[Rule] = []
        for i, raw in enumerate(raw_rules, start=1):
            if not isinstance(raw, Mapping):
                raise ValueError(f"{source}: rule {i}: must be a table ([[rule]]), got {type(raw).__name__}")
            match = raw.get("match")
            name = f"rule {i} (match {match!r})" if isinstance(match, str) else f"rule {i}"
            for key in raw:
                if key == "min_length":
                    raise ValueError(f"{source}: {name}: key 'min_length' is a top-level key; put it before the "
                                     "first [[rule]] (TOML puts a key written after [[rule]] in that rule)")
                if key not in _RULE_KEYS:
                    raise ValueError(f"{source}: {name}: unknown key {key!r} (allowed: match, c)")
            if "match" not in raw:
                raise ValueError(f"{source}: {name}: missing key 'match' (a glob on the module path)")
            if not isinstance(match, str):
                raise ValueError(f"{source}: {name}: key 'match' must be a string, got "
                                 f"{type(match).__name__} {match!r}")
            if not match:
                raise ValueError(f"{source}: {name}: key 'match' is empty (use \"*\" to match every site)")
            if "c" not in raw:
                raise ValueError(f"{source}: {name}: missing key 'c' (a number > 0 or \"exact\")")
            rules.append(Rule(i, match, parse_c(raw["c"], f"{source}: {name}: key 'c'")))
        return cls(tuple(rules), default_c, source, min_length=min_length)

    @classmethod
    def resolve(cls, policy: PolicyLike = None, c: Optional[float] = None,
                min_length: Optional[Union[int, str]] = None) -> "Policy":
        """The policy the backend uses: `policy` (a Policy, a path, None -> $SUS_FX_POLICY,
        False -> none), with options `c` and `min_length` replacing its own. Always a fresh object."""
        if isinstance(policy, Policy):
            base = policy
        elif policy is None or policy is True:
            env = os.environ.get(ENV_VAR, "").strip()
            if env:
                try:
                    base = cls.load(env)
                except FileNotFoundError:
                    raise FileNotFoundError(
                        f"sus-fx policy file not found: {env} (named by ${ENV_VAR})") from None
            else:
                base = cls()
        elif policy is False or policy == "":
            base = cls()
        elif isinstance(policy, (str, os.PathLike)):
            base = cls.load(policy)
        else:
            raise TypeError(f"sus-fx: policy must be a path, a sus_fx.policy.Policy, None or False; "
                            f"got {type(policy).__name__}")
        return base.with_default(c, min_length)

    def with_default(self, c: Optional[float] = None, min_length: Optional[Union[int, str]] = None) -> "Policy":
        """A copy with fresh hit counts; `c` and `min_length` (an int, or "auto"), if given, replace
        the policy's."""
        min_length = self.min_length if min_length is None else parse_min_length(min_length, "sus-fx option")
        if c is None:
            return Policy(self.rules, self.default_c, self.source, self.default_label, min_length)
        c = parse_c(c, "sus-fx option c")
        return Policy(self.rules, c, self.source, f"option c={format_c(c)}", min_length)

    # -- use ----------------------------------------------------------------------------------

    def choose(self, path: str) -> Tuple[float, str]:
        """(c, label) for a site at module path `path`: the first matching rule, else the default."""
        path = path or ""
        for rule in self.rules:
            if fnmatch.fnmatchcase(path, rule.match):
                self.hits[rule.index] += 1
                return rule.c, rule.label
        return self.default_c, self.default_label

    __call__ = choose

    def min_length_for(self, device_type: str) -> int:
        """The key length below which a site on this device type is left as it was."""
        if self.min_length is not None:
            return self.min_length
        return AUTO_MIN_LENGTH.get(device_type, 0)

    def unmatched_rules(self) -> List[Rule]:
        return [r for r in self.rules if self.hits.get(r.index, 0) == 0]

    def warnings(self) -> List[str]:
        where = f" in {self.source}" if self.source else ""
        return [f"policy {r.label}{where} matched no attention site" for r in self.unmatched_rules()]

    def describe(self) -> str:
        ml = "auto (" + ", ".join(f"{d}: {n}" for d, n in AUTO_MIN_LENGTH.items()) + ", other devices: 0)" \
            if self.min_length is None else str(self.min_length)
        lines = [f"policy {self.source or '(none)'}: default c = {format_c(self.default_c)} [{self.default_label}], "
                 f"min_length = {ml}"]
        for r in self.rules:
            lines.append(f"  {r.label}: c = {format_c(r.c)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Policy(source={self.source!r}, default_c={format_c(self.default_c)}, "
                f"rules={[(r.match, format_c(r.c)) for r in self.rules]}, "
                f"min_length={'auto' if self.min_length is None else self.min_length})")
