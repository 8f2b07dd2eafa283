"""How structured is the attention? Effective number of keys per query row, exp(entropy of W_i.),
per layer, for the KJV GPT at n=2048 (causal: row i sees i+1 keys, 1024.5 on average) and for
all-MiniLM-L6-v2 at n=512 (bidirectional, 512 keys). Writes experiments/variance/attention_entropy.json.

    PYTHONPATH=. python3 experiments/attention_entropy.py [GPT_CKPT ...]   # default: gpt_kjv/ckpt.pt + MiniLM
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models  # noqa: E402

from sus_fx.variance import _PathTracker  # noqa: E402


def attention_weights(q, k, attn_mask=None, is_causal=False, scale=None):
    """W = softmax(q k^T * scale + mask) in float32, as SDPA computes it (causal: j <= i)."""
    s = (q.float() @ k.float().transpose(-1, -2)) * (scale or 1 / math.sqrt(q.shape[-1]))
    if is_causal:
        L = q.shape[-2]
        s = s.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        s = s + (attn_mask.float() if attn_mask.dtype != torch.bool else
                 torch.zeros_like(attn_mask, dtype=torch.float).masked_fill(~attn_mask, float("-inf")))
    return torch.softmax(s, -1)


def per_attention_site(model, batch, stat, loss_fn=None):
    """{module path: stat(W)} for every F.scaled_dot_product_attention call of one no-grad forward
    (model(*batch), or loss_fn(model, batch))."""
    tr = _PathTracker(model)
    orig = F.scaled_dot_product_attention
    out = {}

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        out[tr.current()] = stat(attention_weights(q, k, attn_mask, is_causal, scale))
        return orig(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)

    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            if loss_fn is None:
                model(*batch)
            else:
                loss_fn(model, batch)
    finally:
        F.scaled_dot_product_attention = orig
        tr.remove()
    return out


def _entropy(w):
    ent = -(w * torch.log(w.clamp_min(1e-30))).sum(-1)
    top1 = w.max(-1).values
    return {"eff_keys_mean": float(ent.exp().mean()), "eff_keys_median": float(ent.exp().median()),
            "top1_weight_mean": float(top1.mean())}


def entropy_stats(model, batch, loss_fn=None):
    return per_attention_site(model, batch, _entropy, loss_fn)


if __name__ == "__main__":
    path = os.path.join(HERE, "variance", "attention_entropy.json")
    res = json.load(open(path)) if os.path.exists(path) else {}
    ckpts = sys.argv[1:]
    if not ckpts:
        m, gb = models.gpt_kjv(n=2048, batch_size=1)
        res["gpt_kjv n=2048"] = entropy_stats(m.eval(), gb(0))
        m, gb, lf = models.minilm(n=512, batch_size=1)
        res["minilm n=512"] = entropy_stats(m.eval(), gb(0), lf)
    for ck in ckpts:
        m, gb = models.gpt_kjv(n=2048, batch_size=1, ckpt=ck)
        res[f"{os.path.relpath(ck, HERE)} n=2048"] = entropy_stats(m.eval(), gb(0))
    print(json.dumps(res, indent=1))
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
