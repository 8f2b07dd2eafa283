import os
import sys

# Without a GPU, Triton kernels can only run under its interpreter. Triton reads the switch when it
# is first imported (Inductor imports it early), so set it before any test module loads.
if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests import their shared helpers as a plain module
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _tiny_shapes_take_sus():
    """The tests run attention on tiny shapes, which min_length's "auto" default leaves exact on
    CUDA (sus_fx.policy.AUTO_MIN_LENGTH: a speed choice, measured at GPT scale). So that the GPU
    tests exercise SUS, "auto" means 0 in this session (session scope: module-scoped fixtures that
    compile come after it), except in tests marked `auto_min_length`, which test that default.
    Subprocesses that compile do the same themselves."""
    from sus_fx import policy
    real = dict(policy.AUTO_MIN_LENGTH)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(policy, "AUTO_MIN_LENGTH", {})
        yield real


@pytest.fixture(autouse=True)
def _real_auto_min_length(request, _tiny_shapes_take_sus, monkeypatch):
    if request.node.get_closest_marker("auto_min_length") is not None:
        from sus_fx import policy
        monkeypatch.setattr(policy, "AUTO_MIN_LENGTH", dict(_tiny_shapes_take_sus))
