import os
import sys

# Without a GPU, Triton kernels can only run under its interpreter. Triton reads the switch when it
# is first imported (Inductor imports it early), so set it before any test module loads.
if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests import their shared helpers as a plain module
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _tiny_shapes_take_sus(request, monkeypatch):
    """The tests run attention on tiny shapes, which min_length's "auto" default leaves exact on
    CUDA (sus_fx.policy.AUTO_MIN_LENGTH: a speed choice, measured at GPT scale). So that the GPU
    tests exercise SUS, "auto" means 0 here, except in tests marked `auto_min_length`, which test
    that default itself."""
    if request.node.get_closest_marker("auto_min_length") is None:
        from sus_fx import policy
        monkeypatch.setattr(policy, "AUTO_MIN_LENGTH", {})
