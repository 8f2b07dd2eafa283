#!/usr/bin/env bash
# Issue 5 on one GPU in one call (~7.5 min): pretrain, variance table, sampler comparison, parity.
# Results under $OUT (run.log, ckpt.pt, train_log.json, variance.json/.png, samplers.json, parity.json, loss.png).
#   bash experiments/gpu/run_issue5_gpu.sh           # GPU machine, from the repo root
#   bash experiments/gpu/run_issue5_gpu.sh --smoke   # CPU check with a tiny model (~2-3 min)
cd "$(dirname "$0")/../.." || exit 1
exec python3 experiments/gpu/run_issue5_gpu.py "$@"
