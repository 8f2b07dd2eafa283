"""Shared helpers for the attention passes: reading a Dynamo FX graph.

Everything here reads; nothing mutates the graph. The passes work on Dynamo's torch-level graph:
call_function nodes whose targets are torch functions or `operator` functions, call_method nodes
for Tensor methods, and node.meta["example_value"] (a FakeTensor, a SymInt/SymFloat or a Python
value) for shapes and dtypes. nn.Modules are inlined; node.meta["nn_module_stack"] names the
module each node came from.

Shape comparisons never add guards: symbolic sizes count as equal only when that is statically
known, so an unprovable comparison makes a candidate fail (and be skipped), never match.
"""
from __future__ import annotations

import operator
import re
from typing import Any, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.fx import Node

try:
    from torch.fx.experimental.symbolic_shapes import statically_known_true
except ImportError:  # pragma: no cover - very old torch
    def statically_known_true(x):  # type: ignore[misc]
        return bool(x) if isinstance(x, bool) else False


class NoMatch(Exception):
    """Raised by matchers to abandon a candidate; the message is the reason recorded in the Skip."""


# ----------------------------------------------------------------------------------------------
# Targets

MATMUL_FUNCTIONS = {torch.matmul, operator.matmul, torch.bmm, torch.Tensor.matmul, torch.Tensor.bmm}
MATMUL_METHODS = {"matmul", "bmm", "__matmul__"}
SOFTMAX_FUNCTIONS = {F.softmax, torch.softmax, torch.special.softmax, torch.Tensor.softmax}
CAST_METHODS = {"to", "type", "type_as", "float", "half", "bfloat16", "double"}
NOOP_METHODS = {"contiguous", "clone"}
NOOP_FUNCTIONS = {torch.clone}


def is_function(node: Any, *targets) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target in targets


def is_method(node: Any, *names: str) -> bool:
    return isinstance(node, Node) and node.op == "call_method" and node.target in names


def is_matmul(node: Any) -> bool:
    return (isinstance(node, Node) and ((node.op == "call_function" and node.target in MATMUL_FUNCTIONS)
                                        or (node.op == "call_method" and node.target in MATMUL_METHODS)))


def is_einsum(node: Any) -> bool:
    return is_function(node, torch.einsum)


def is_baddbmm(node: Any) -> bool:
    return is_function(node, torch.baddbmm, torch.Tensor.baddbmm) or is_method(node, "baddbmm")


def arg(node: Node, index: int, name: str, default: Any = None) -> Any:
    """Argument `name` of a call, given positionally at `index` (counting self for methods) or by keyword."""
    if name in node.kwargs:
        return node.kwargs[name]
    if index < len(node.args):
        return node.args[index]
    return default


def describe(node: Any) -> str:
    if not isinstance(node, Node):
        return repr(node)
    if node.op == "call_method":
        return f".{node.target}() ({node.name})"
    if node.op == "call_function":
        t = node.target
        name = getattr(t, "__name__", str(t))
        mod = getattr(t, "__module__", None) or ""
        if mod.startswith("_operator"):
            mod = "operator"
        return f"{mod + '.' if mod else ''}{name} ({node.name})"
    return f"{node.op} {node.name}"


# ----------------------------------------------------------------------------------------------
# Metadata

def meta_value(node: Any) -> Any:
    if isinstance(node, Node):
        return node.meta.get("example_value", node.meta.get("val"))
    return node


def tensor_of(node: Any) -> Optional[torch.Tensor]:
    v = meta_value(node)
    return v if isinstance(v, torch.Tensor) else None


def shape_of(node: Any) -> Optional[tuple]:
    t = tensor_of(node)
    return tuple(t.shape) if t is not None else None


def dtype_of(node: Any) -> Optional[torch.dtype]:
    t = tensor_of(node)
    return t.dtype if t is not None else None


def require_tensor(node: Any, what: str) -> torch.Tensor:
    t = tensor_of(node)
    if t is None:
        raise NoMatch(f"no shape/dtype metadata for {what} ({describe(node)})")
    return t


def size_eq(a: Any, b: Any) -> bool:
    """Statically known equality of two sizes (ints or SymInts); never adds a guard."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return bool(statically_known_true(a == b))
    except Exception:
        return False


def shape_eq(a: Sequence, b: Sequence) -> bool:
    return len(a) == len(b) and all(size_eq(x, y) for x, y in zip(a, b))


def broadcasts_to(small: Sequence, target: Sequence) -> bool:
    """True when a tensor of shape `small` broadcasts to `target` without enlarging it."""
    if len(small) > len(target):
        return False
    return all(size_eq(m, 1) or size_eq(m, t) for m, t in zip(reversed(small), reversed(target)))


def plain_shape(shape: Optional[Sequence]) -> Optional[tuple]:
    """A shape for reports: ints stay ints, symbolic sizes become strings."""
    if shape is None:
        return None
    return tuple(s if isinstance(s, int) else str(s) for s in shape)


# ----------------------------------------------------------------------------------------------
# Users

def only_user(node: Node) -> Optional[Node]:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def require_only_user(node: Node, expected: Node, what: str) -> None:
    users = list(node.users)
    if users != [expected]:
        others = [describe(u) for u in users if u is not expected]
        raise NoMatch(f"{what} ({node.name}) has other users: {', '.join(others) or 'none'}")


# ----------------------------------------------------------------------------------------------
# Value-preserving nodes: casts, contiguous/clone

def cast_input(node: Any) -> Optional[Node]:
    """If `node` only changes the dtype (or nothing) of a floating tensor, return its input.

    Covers .to(dtype) / .to(other) / .type(dtype) / .type_as(t) / .float() / .half() / .bfloat16() /
    .double() / .contiguous() / .clone(). Decided from metadata: same shape, same device, floating
    dtypes on both sides; anything else (a device move, an int cast) is not a cast here.
    """
    if not isinstance(node, Node):
        return None
    if not (is_method(node, *CAST_METHODS, *NOOP_METHODS) or is_function(node, *NOOP_FUNCTIONS)):
        return None
    src = node.args[0] if node.args else None
    if not isinstance(src, Node):
        return None
    a, b = tensor_of(src), tensor_of(node)
    if a is None or b is None:
        return None
    if not (a.is_floating_point() and b.is_floating_point()):
        return None
    if a.device != b.device or not shape_eq(a.shape, b.shape):
        return None
    return src


def is_upcast_or_same(src_dtype: torch.dtype, dst_dtype: torch.dtype) -> bool:
    """dst represents every value of src exactly."""
    if src_dtype == dst_dtype:
        return True
    if dst_dtype == torch.float64:
        return True
    if dst_dtype == torch.float32:
        return src_dtype in (torch.float16, torch.bfloat16)
    return False


def widest(*dtypes: torch.dtype) -> torch.dtype:
    ds = set(dtypes)
    if len(ds) == 1:
        return ds.pop()
    if torch.float64 in ds:
        return torch.float64
    return torch.float32


# ----------------------------------------------------------------------------------------------
# Views

def last_two_swapped(node: Any) -> Optional[Node]:
    """If `node` is x with its last two dims swapped (transpose / permute / .mT / .t()), return x."""
    if not isinstance(node, Node) or not node.args or not isinstance(node.args[0], Node):
        return None
    src = node.args[0]
    nd = len(shape_of(src) or ())
    if nd < 2:
        return None
    if is_method(node, "transpose") or is_function(node, torch.transpose):
        dims = [arg(node, 1, "dim0"), arg(node, 2, "dim1")]
        if all(isinstance(d, int) for d in dims) and sorted(d % nd for d in dims) == [nd - 2, nd - 1]:
            return src
        return None
    if is_method(node, "permute") or is_function(node, torch.permute):
        dims = list(node.args[1:]) if node.op == "call_method" else [arg(node, 1, "dims")]
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = list(dims[0])
        if "dims" in node.kwargs:
            dims = list(node.kwargs["dims"])
        if not all(isinstance(d, int) for d in dims) or len(dims) != nd:
            return None
        want = list(range(nd - 2)) + [nd - 1, nd - 2]
        return src if [d % nd for d in dims] == want else None
    if node.op == "call_function" and node.target is getattr and len(node.args) == 2 and node.args[1] == "mT":
        return src
    if is_method(node, "t") and nd == 2:
        return src
    return None


# ----------------------------------------------------------------------------------------------
# Scalars

def _round_to(value: float, dtype: Optional[torch.dtype]) -> float:
    if dtype is None or dtype == torch.float64:
        return float(value)
    return torch.tensor(value, dtype=dtype).item()


def scalar_of(x: Any) -> Optional[Any]:
    """A scalar factor usable as SDPA's `scale`: a Python number, or a node that produces a Python
    number at run time (SymFloat/SymInt, e.g. `.item()` of a tensorified float or `d ** -0.5`
    under dynamic shapes), or a constant 0-d tensor built from a number (torch.full([], v) /
    torch.tensor(v) / torch.scalar_tensor(v); the number is rounded to that tensor's dtype).
    Returns a float or a Node; None when `x` is not such a scalar (e.g. a tensor that may require
    grad or hold data-dependent values)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if not isinstance(x, Node):
        return None
    v = meta_value(x)
    if isinstance(v, (torch.SymInt, torch.SymFloat)) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return x
    const = constant_tensor_value(x)
    if const is not None:
        return const
    return None


def constant_tensor_value(node: Node) -> Optional[float]:
    """The number held by a constant 0-d tensor node (torch.full([], v), torch.tensor(v),
    torch.scalar_tensor(v)), rounded to its dtype; None otherwise."""
    t = tensor_of(node)
    if t is None or t.dim() != 0 or t.requires_grad:
        return None
    if is_function(node, torch.full):
        size, fill = arg(node, 0, "size"), arg(node, 1, "fill_value")
        if not (isinstance(size, (list, tuple)) and len(size) == 0):
            return None
    elif is_function(node, torch.tensor, torch.scalar_tensor):
        fill = arg(node, 0, "data" if node.target is torch.tensor else "s")
    else:
        return None
    if isinstance(fill, bool) or not isinstance(fill, (int, float)):
        return None
    return _round_to(float(fill), t.dtype)


# ----------------------------------------------------------------------------------------------
# Module paths

_ROOT = re.compile(r"^\s*[A-Za-z_]+\[[^\]]*\](\[[^\]]*\])*")


def normalize_module_path(p: str) -> str:
    """Dynamo's source name of a module -> a dotted path as in model.named_modules().

    "L['self'].model.layers[0].self_attn", "L['args'][0].layers.0.self_attn",
    "L['self']._modules['layers']._modules['0']" and "G['model'].h.0" all lose their root.
    """
    p = _ROOT.sub("", p)
    p = re.sub(r"\._modules\[['\"]([^'\"]+)['\"]\]", r".\1", p)
    p = re.sub(r"\[['\"]([^'\"]+)['\"]\]", r".\1", p)
    p = re.sub(r"\[(\d+)\]", r".\1", p)
    return p.strip(".")


def module_stack(node: Node) -> list:
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for key, val in stack.items():
        path = val[0] if isinstance(val, tuple) else str(val)
        out.append((key, path))
    return out


def module_path(nodes: Iterable[Node]) -> str:
    """Innermost module enclosing all of `nodes` (common prefix of their module stacks)."""
    stacks = [module_stack(n) for n in nodes if isinstance(n, Node)]
    stacks = [s for s in stacks if s] or stacks
    if not stacks:
        return ""
    common = stacks[0]
    for s in stacks[1:]:
        i = 0
        while i < min(len(common), len(s)) and common[i][0] == s[i][0]:
            i += 1
        common = common[:i]
    return normalize_module_path(common[-1][1]) if common else ""
