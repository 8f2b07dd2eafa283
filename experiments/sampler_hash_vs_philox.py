"""Does the per-tile hash (stop 11) change the kernel sampler's variance? E||g - g_exact||^2 of the
Triton kernels with the hash (now), with one Philox draw per key tile (stop 10's kernels, read
from git at dd3182a) and of independent Bernoulli (the reference), on one small causal problem
under the Triton interpreter (CPU; BM = BN = UB = 16), with dO rows independent (rho = 0) or
AR(1)-correlated along the sequence (rho = 0.9, where the block-shared uniforms matter).
Results: notes/VARIANCE.md, section 4 (~9 min per rho for N = 300 on one core).

    N=300 PYTHONPATH=. python3 experiments/sampler_hash_vs_philox.py [rho]
"""
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time

os.environ["TRITON_INTERPRET"] = "1"
os.environ["SUS_FX_INTERPRET_KERNELS"] = "1"
import torch  # noqa: E402

from sus_fx import reference  # noqa: E402
import sus_fx.kernels.sus_bwd as new  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_old_src = subprocess.run(["git", "-C", ROOT, "show", "dd3182a:sus_fx/kernels/sus_bwd.py"],
                          capture_output=True, text=True, check=True).stdout
_old_path = os.path.join(tempfile.mkdtemp(), "sus_bwd_stop10.py")
with open(_old_path, "w") as f:
    f.write(_old_src)
spec = importlib.util.spec_from_file_location("sus_bwd_stop10", _old_path)
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
for m in (new, old):
    m._OVERRIDE.update(BM=16, BN=16, UB=16, SUB=1)
rho = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
g = torch.Generator().manual_seed(0)
B, H, L, D = 1, 2, 96, 16
q = torch.randn(B, H, L, D, generator=g) * 1.5
k = torch.randn(B, H, L, D, generator=g)
v = torch.randn(B, H, L, D, generator=g)
e = torch.randn(B, H, L, D, generator=g)
do = e.clone()
for i in range(1, L):  # AR(1) along the sequence: correlated neighbouring rows of dO
    do[:, :, i] = rho * do[:, :, i - 1] + math.sqrt(1 - rho * rho) * e[:, :, i]
s = 1 / math.sqrt(D); c = 4.0
out, lse = reference.forward(q, k, v, None, True, s)
ex = reference.backward(do, q, k, v, out, lse, None, True, s, float("inf"), 1)[:3]
N = int(os.environ.get("N", "150"))
res = {}
for name, fn in (("hash (now)", lambda n: new.sus_backward(do, q, k, v, None, out, lse, True, s, c, 1000 + n)),
                 ("philox (stop 10)", lambda n: old.sus_backward(do, q, k, v, None, out, lse, True, s, c, 1000 + n)),
                 ("independent (reference)", lambda n: reference.backward(do, q, k, v, out, lse, None, True, s, c, 1000 + n)[:3])):
    t0 = time.time()
    errs = torch.zeros(N, 3, dtype=torch.float64)
    for n in range(N):
        gr = fn(n)
        for i in range(3):
            errs[n, i] = float(((gr[i].double() - ex[i].double()) ** 2).sum())
    res[name] = errs
    print(name, "%.0fs" % (time.time() - t0), flush=True)
base = res["independent (reference)"]
print(f"rho={rho}  E||g - g_exact||^2 ratio to independent Bernoulli (mean over {N} draws, +- 1 s.e. of the ratio)")
for name, errs in res.items():
    r = errs.mean(0) / base.mean(0)
    se = r * torch.sqrt((errs.var(0) / errs.mean(0) ** 2 + base.var(0) / base.mean(0) ** 2) / N)
    print(f"  {name:26s} dQ {r[0]:.3f}+-{se[0]:.3f}  dK {r[1]:.3f}+-{se[1]:.3f}  dV {r[2]:.3f}+-{se[2]:.3f}")
