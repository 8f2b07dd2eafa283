#!/bin/sh
# Training parity, CPU, larger: 3 exact data orders (noise), SUS c=16 and 32 on orders 0 and 1, 300 steps.
# Patch engine (same op and backward as backend="sus"; run_parity_cpu.sh uses torch.compile). ~25 min on 2 busy cores.
set -e
cd "$(dirname "$0")/.."
PYTHONPATH=. python3 examples/train_gpt.py parity --context 512 --batch-size 4 --steps 300 --layers 4 --heads 4 \
  --embd 128 --lr 2e-3 --warmup 30 --eval-every 25 --eval-batches 8 --c 16 32 --exact-orders 3 --sus-orders 0 1 \
  --engine patch --out experiments/parity_cpu_v2
