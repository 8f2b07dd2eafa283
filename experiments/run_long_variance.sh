#!/bin/sh
# Variance of the longer-trained GPT (experiments/gpt_kjv_long, 400 + 600 steps) at n = 512 and 2048.
set -e
cd "$(dirname "$0")/.."
PYTHONPATH=. python3 -m sus_fx.variance --model experiments/models.py:gpt_kjv \
  --factory-arg ckpt=experiments/gpt_kjv_long/ckpt.pt --n 512 2048 --batch-size 1 --c 8 16 32 64 \
  --batches 16 --fixed-batches 4 --draws 1 --engine patch --groups --no-progress \
  --json experiments/variance/gpt_kjv_long.json
PYTHONPATH=. python3 experiments/attention_entropy.py experiments/gpt_kjv_long/ckpt.pt > /dev/null
