"""Real text for experiments: the King James Bible (public domain, Debian package ``bible-kjv``).

    text = kjv_text()                       # str, one verse a line, references stripped
    data = byte_tokens(text)                # uint8 tensor
    train, val = split(data, 0.9)
    x, y = window_batch(train, batch_size=2, n=2048, seed=7)   # random windows, deterministic

The text comes from ``bible -f Gen1:1-Rev22:21`` (install: ``apt-get install -y bible-kjv``),
cached in ``$SUS_FX_DATA`` (default ``~/.cache/sus_fx``). Byte-level tokens: vocab 256, no tokenizer.
A second real corpus on every machine: the CPython standard library sources (``stdlib_text()``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from typing import Tuple

import torch

_REF = re.compile(r"^\S+?\d+:\d+\s+")


def cache_dir() -> str:
    d = os.environ.get("SUS_FX_DATA", os.path.join(os.path.expanduser("~"), ".cache", "sus_fx"))
    os.makedirs(d, exist_ok=True)
    return d


def kjv_text(strip_references: bool = True) -> str:
    """The whole KJV Bible as text (4.4 MB raw). Raises RuntimeError with the install hint."""
    path = os.path.join(cache_dir(), "kjv.txt")
    if not os.path.exists(path):
        if shutil.which("bible") is None:
            raise RuntimeError("the KJV text needs Debian's bible-kjv: apt-get install -y bible-kjv "
                               f"(or put the output of `bible -f Gen1:1-Rev22:21` in {path})")
        out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
        with open(path + ".tmp", "w") as f:
            f.write(out)
        os.replace(path + ".tmp", path)
    with open(path) as f:
        raw = f.read()
    if not strip_references:
        return raw
    return "\n".join(_REF.sub("", line) for line in raw.splitlines() if line.strip()) + "\n"


def stdlib_text(max_bytes: int = 8 << 20) -> str:
    """Concatenated CPython standard-library sources (a second real corpus)."""
    root = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "site-packages", "__pycache__"))
        for fn in sorted(files):
            if fn.endswith(".py"):
                with open(os.path.join(dirpath, fn), errors="replace") as f:
                    s = f.read()
                parts.append(s)
                total += len(s)
                if total >= max_bytes:
                    return "".join(parts)
    return "".join(parts)


def byte_tokens(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def split(data: torch.Tensor, frac: float = 0.9) -> Tuple[torch.Tensor, torch.Tensor]:
    k = int(len(data) * frac)
    return data[:k], data[k:]


def window_batch(data: torch.Tensor, batch_size: int, n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows of n+1 tokens, deterministic in `seed`: (inputs, targets) int64 [B, n]."""
    if len(data) <= n + 1:
        raise ValueError(f"corpus of {len(data)} tokens is too short for windows of {n + 1}")
    g = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, len(data) - n - 1, (batch_size,), generator=g)
    w = torch.stack([data[s: s + n + 1] for s in starts.tolist()]).long()
    return w[:, :-1], w[:, 1:]
