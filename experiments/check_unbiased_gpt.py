"""Is the SUS gradient of the GPT unbiased under both engines (patch and torch.compile(backend="sus"))?
At initialization (where training parity first diverged), one batch of 4 x 512 bytes: K = 24 SUS
gradients; for an unbiased estimator ||mean - g_exact||^2 / (E||g_sus - g_exact||^2 / K) ~ 1.
Also prints the extra variance relative to ||g_exact||^2. Output: experiments/parity_cpu/unbiased_check.txt

    PYTHONPATH=. python3 experiments/check_unbiased_gpt.py
"""
import sys, torch, time, os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

from gpt import GPT, GPTConfig
from sus_fx import data as sdata
from sus_fx.variance import sus_patch
tr,va=sdata.split(sdata.byte_tokens(sdata.kjv_text()),0.9)
torch.manual_seed(0); m=GPT(GPTConfig())
x,y=sdata.window_batch(tr,4,512,seed=0)
def grad(f):
    m.zero_grad(); f(x,y).backward(); return torch.cat([p.grad.flatten() for p in m.parameters()]).clone()
g=grad(m)
K=24
for c in (16.0,32.0):
    for eng in ("patch","compile"):
        t=time.time()
        if eng=="patch":
            ctx=sus_patch(m,lambda p:c); f=m
        else:
            import contextlib; ctx=contextlib.nullcontext(); f=torch.compile(m,backend="sus",options={"c":c})
        with ctx:
            gs=torch.stack([grad(f) for _ in range(K)])
        mean=gs.mean(0); dev=((gs-g)**2).sum(1).mean()
        print(c,eng,"bias^2/(var/K)=%.2f"%(((mean-g)**2).sum()/(dev/K)).item(),"rel var=%.4f"%(dev/(g**2).sum()).item(), "%.0fs"%(time.time()-t), flush=True)
