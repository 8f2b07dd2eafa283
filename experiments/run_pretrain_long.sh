#!/bin/sh
# Continue the KJV GPT (experiments/gpt_kjv, 400 steps) for 600 more steps at context 2048 (new data
# order, fresh AdamW, lr 1.5e-3 cosine): does more structured attention lower the SUS variance?
set -e
cd "$(dirname "$0")/.."
PYTHONPATH=. python3 examples/train_gpt.py pretrain --context 2048 --steps 600 --batch-size 2 --lr 1.5e-3 --warmup 10 \
  --eval-every 50 --eval-batches 4 --order-seed 1 --init-from experiments/gpt_kjv/ckpt.pt --out experiments/gpt_kjv_long
