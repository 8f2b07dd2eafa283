"""Per-parameter-tensor relative variance increase of the GPT at initialization (seed 0, the parity
runs' init), to compare with the trained KJV checkpoint (experiments/per_param_n512.sh ->
variance/gpt_kjv_per_param_n512.json). n = 512, batch 4 (the parity runs' shapes).
Output: variance/gpt_init_per_param_n512.json

    PYTHONPATH=. python3 experiments/per_param_init.py
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, os.path.join(HERE, ".."))
from gpt import GPT, GPTConfig  # noqa: E402
from sus_fx import data as sdata  # noqa: E402
from sus_fx import variance as V  # noqa: E402

tr, _ = sdata.split(sdata.byte_tokens(sdata.kjv_text()), 0.9)
torch.manual_seed(0)
model = GPT(GPTConfig())
res = V.measure(model, lambda i: sdata.window_batch(tr, 4, 512, seed=7_000_000 + i), cs=[16.0, 32.0], batches=16,
                fixed_batches=4, draws=1, n=512, batch_size=4, engine="patch", group_by="param", progress=False,
                label="init")
with open(os.path.join(HERE, "variance", "gpt_init_per_param_n512.json"), "w") as f:
    json.dump(V.jsonable(res), f, indent=1)
for row in res["rows"]:
    print(row["config"], f"all parameters {100 * row['relative_increase']:.3g}%")
    for g, v in row["per_group"].items():
        if "c_attn" in g or g == "wte.weight":
            print(f"   {g:28s} {100 * v['relative_increase']:.3g}%")
