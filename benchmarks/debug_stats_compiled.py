"""Why sus_fx.stats() recorded no backward of a compiled CUDA graph in e2e_gpt.py --union-stats
(stop 16, call 1): traces which pieces of the stats-variant mechanism run (backend._StatsAwareGraph,
ops._triton_op_takes, dispatch.backward) for a small compiled attention module on the GPU."""
import torch
import torch.nn.functional as F

import sus_fx
import sus_fx.backend as backend_mod
import sus_fx.ops as ops_mod
from sus_fx.kernels import dispatch

log = []


def wrap(mod, name, tag):
    orig = getattr(mod, name)

    def f(*a, **k):
        from sus_fx.stats import recording
        r = orig(*a, **k)
        log.append(f"{tag} recording={recording()} -> {type(r).__name__ if not isinstance(r, bool) else r}")
        return r
    setattr(mod, name, f)


wrap(backend_mod, "_compile_rewritten", "backend._compile_rewritten")
wrap(backend_mod, "_compile_fx", "backend._compile_fx")
wrap(backend_mod, "_needs_stats_variant", "backend._needs_stats_variant")
wrap(ops_mod, "_triton_op_takes", "ops._triton_op_takes")
wrap(dispatch, "backward", "dispatch.backward")
orig_call = backend_mod._StatsAwareGraph.__call__


def call(self, *a):
    from sus_fx.stats import recording
    log.append(f"_StatsAwareGraph.__call__ recording={recording()} variants={sorted(self._variants)}")
    return orig_call(self, *a)


backend_mod._StatsAwareGraph.__call__ = call


class Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(64, 3 * 64, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, 1, 64).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).sum()


torch.manual_seed(0)
m = Attn().cuda()
x = torch.randn(1, 1024, 64, device="cuda")
f = torch.compile(m, backend=sus_fx.make_backend(c=8, strict=True, min_length=0), dynamic=False)
with torch.autocast("cuda", dtype=torch.bfloat16):
    loss = f(x)
loss.backward()
log.append("--- step 1 done (outside stats)")
with sus_fx.stats() as rec:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = f(x)
    loss.backward()
log.append("--- step 2 done (inside stats)")
print("\n".join(log))
print("summary:", rec.summary())
