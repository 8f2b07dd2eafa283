"""sus-fx: SUS backprop (sparse, unbiased, stochastic) for attention, as a torch.compile backend.

    torch.compile(model, backend="sus")          # after pip install, no import needed
    sus_fx.sus_attention(q, k, v, c=32.0)        # the op itself
"""
from .ops import sus_attention
from .stats import stats

__all__ = ["sus_attention", "stats", "make_backend", "inspect"]
__version__ = "0.1.0"


def __getattr__(name):
    # The backend and inspection pull in Inductor; load them only when asked for.
    if name == "make_backend":
        from .backend import make_backend
        return make_backend
    if name == "inspect":
        from .inspection import inspect
        return inspect
    raise AttributeError(f"module 'sus_fx' has no attribute {name!r}")
