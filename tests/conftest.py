import os
import sys

# Without a GPU, Triton kernels can only run under its interpreter. Triton reads the switch when it
# is first imported (Inductor imports it early), so set it before any test module loads.
if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests import their shared helpers as a plain module
sys.path.insert(0, os.path.dirname(__file__))
