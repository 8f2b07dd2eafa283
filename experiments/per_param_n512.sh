#!/bin/sh
# Per-parameter-tensor relative variance increase of the KJV GPT at n=512 (the parity runs' context).
cd "$(dirname "$0")/.."
PYTHONPATH=. python3 -m sus_fx.variance --model experiments/models.py:gpt_kjv --n 512 --batch-size 4 --c 16 32 \
  --batches 16 --fixed-batches 4 --draws 1 --engine patch --group-by param --groups --no-progress \
  --json experiments/variance/gpt_kjv_per_param_n512.json
