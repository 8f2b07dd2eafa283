"""Which part of the compiled SUS backward holds the GPT's extra memory (memory_gpt.py found it in
the compiled backward only): the same step with the opaque backward op instead of the traced Triton
launches, and with Inductor's reorder_for_peak_memory on. T=8192, GPT-124M, H200 rows in
benchmarks/results/h200_stop14_5_memory_gpt.md.

    python3 benchmarks/memory_gpt_variants.py
"""
import contextlib
import os
import sys

import torch
import torch._inductor.config as ic

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import memory_gpt as M  # noqa: E402
from gpt import GPT, GPTConfig  # noqa: E402

import sus_fx  # noqa: E402
from sus_fx import ops  # noqa: E402

cfg = GPTConfig(vocab_size=50304, n_layer=12, n_head=12, n_embd=768)
idx = torch.randint(0, 50304, (1, 8192), device="cuda")
orig = ops._triton_op_takes
print("reorder_for_peak_memory default:", getattr(ic, "reorder_for_peak_memory", None))
for name in ("sus, opaque backward op", "sus, reorder_for_peak_memory"):
    torch.manual_seed(0)
    model = GPT(cfg).cuda()
    torch._dynamo.reset()
    if "opaque" in name:
        ops._triton_op_takes = lambda *a, **k: False
    try:
        with ic.patch(reorder_for_peak_memory=True) if "reorder" in name else contextlib.nullcontext():
            r = M.measure(model, torch.compile(model, backend=sus_fx.make_backend()), idx)
        print(f"| compiled {name} | {r[0]:.0f} | {r[1]:.0f} |", flush=True)
    except Exception as e:
        print(name, type(e).__name__, str(e)[:300], flush=True)
    finally:
        ops._triton_op_takes = orig
    del model
    torch.cuda.empty_cache()
