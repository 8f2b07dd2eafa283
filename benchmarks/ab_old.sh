#!/bin/bash
# Copies sus_fx/kernels as it was at git revision REV into benchmarks/_ab_old/sus_fx_old (ignored by
# git; pass it to the device tool's `carry`), for benchmarks/ab_kernels.py. Its custom ops are
# renamed sus -> sus_old so that both revisions register in one process.
#   bash benchmarks/ab_old.sh e901eef
set -eu
cd "$(dirname "$0")/.."
REV=${1:?usage: ab_old.sh REV}
D=benchmarks/_ab_old/sus_fx_old
rm -rf benchmarks/_ab_old && mkdir -p "$D/kernels"
echo "\"\"\"sus_fx/kernels at $(git rev-parse --short "$REV") (benchmarks/ab_old.sh)\"\"\"" > "$D/__init__.py"
for f in $(git ls-tree --name-only "$REV" sus_fx/kernels/ | grep '\.py$'); do
  git show "$REV:$f" | sed 's/"sus::/"sus_old::/g; s/torch\.ops\.sus\./torch.ops.sus_old./g; s/Library("sus"/Library("sus_old"/g' > "$D/kernels/$(basename "$f")"
done
git rev-parse --short "$REV" > benchmarks/_ab_old/REV
echo "benchmarks/_ab_old: sus_fx/kernels at $(cat benchmarks/_ab_old/REV)"
