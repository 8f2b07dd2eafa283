#!/bin/sh
# Training parity, short CPU version: exact (2 data orders) vs SUS c=16, 32 via torch.compile(backend="sus").
set -e
cd "$(dirname "$0")/.."
PYTHONPATH=. python3 examples/train_gpt.py parity --context 512 --batch-size 4 --steps 200 --layers 4 --heads 4 \
  --embd 128 --lr 3e-3 --warmup 30 --eval-every 25 --eval-batches 8 --c 16 32 --exact-orders 2 --engine compile \
  --out experiments/parity_cpu
