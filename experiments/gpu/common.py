"""Shared helpers of the issue-5 GPU driver (experiments/gpu/run_issue5_gpu.py).

Corpus: the driver decides once which text is used and passes it to every step in the
environment: SUS_FX_CORPUS (kjv | stdlib) and, for the KJV, SUS_FX_DATA (the folder holding
kjv.txt, which sus_fx.data.kjv_text reads before it ever calls the `bible` program).
"""
from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _p in (ROOT, os.path.join(ROOT, "examples"), os.path.join(ROOT, "experiments")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

KJV_XZ = os.path.join(HERE, "kjv.txt.xz")
# sha256 of `bible -f Gen1:1-Rev22:21` (Debian bible-kjv 4.x), the text the CPU runs used
KJV_SHA256 = "cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d"


def prepare_corpus(data_dir: str) -> dict:
    """Make the KJV text available to sus_fx.data (or choose the stdlib fallback). Returns
    {"corpus": "kjv"|"stdlib", "source": str, "env": {...}} ; the env goes to every step."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "kjv.txt")
    notes = []
    # 1. the compressed copy shipped in the repo (public domain text, 0.98 MB xz)
    try:
        if not os.path.exists(path):
            with lzma.open(KJV_XZ, "rb") as f:
                raw = f.read()
            got = hashlib.sha256(raw).hexdigest()
            if got != KJV_SHA256:
                raise RuntimeError(f"sha256 {got} != expected {KJV_SHA256}")
            with open(path + ".tmp", "wb") as f:
                f.write(raw)
            os.replace(path + ".tmp", path)
        return {"corpus": "kjv", "source": f"experiments/gpu/kjv.txt.xz (sha256 of text {KJV_SHA256[:16]}...)",
                "env": {"SUS_FX_DATA": data_dir, "SUS_FX_CORPUS": "kjv"}}
    except Exception as e:  # noqa: BLE001
        notes.append(f"shipped copy unusable: {e!r}")
    # 2. sus_fx.data's own route (its cache, else Debian's `bible` program)
    try:
        from sus_fx import data as sdata
        sdata.kjv_text()
        return {"corpus": "kjv", "source": "sus_fx.data default (cache or bible-kjv); " + "; ".join(notes),
                "env": {"SUS_FX_CORPUS": "kjv"}}
    except Exception as e:  # noqa: BLE001
        notes.append(f"sus_fx.data.kjv_text failed: {e!r}")
    return {"corpus": "stdlib", "source": "CPython stdlib sources (KJV not available: " + "; ".join(notes) + ")",
            "env": {"SUS_FX_CORPUS": "stdlib"}}


def corpus_name() -> str:
    return os.environ.get("SUS_FX_CORPUS", "kjv")


def splits():
    """(train, val) byte tensors of the chosen corpus, as examples/train_gpt.py splits them."""
    from sus_fx import data as sdata
    from train_gpt import corpus_text
    return sdata.split(sdata.byte_tokens(corpus_text(corpus_name())), 0.9)


def load_model(ckpt: str, device: str):
    """(model, meta) from a checkpoint written by examples/train_gpt.py (meta may be {})."""
    import torch
    from gpt import load_checkpoint
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    return load_checkpoint(ckpt).to(device), ck.get("meta", {}) or {}


def write_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(clean(obj), f, indent=1, default=_default)
    os.replace(path + ".tmp", path)


def _default(o):
    if isinstance(o, float):
        return None
    return str(o)


def clean(obj):
    """Strict-JSON version: inf -> "inf", nan -> None, recursively."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def md_table(headers, rows) -> str:
    """A GitHub markdown table without tabulate (it may be missing)."""
    rows = [[("-" if v is None else str(v)) for v in r] for r in rows]
    out = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


class Budget:
    """Soft time budget of one step: `left()` seconds remain, `over(reserve)` when fewer remain."""

    def __init__(self, seconds: float):
        self.t0 = time.time()
        self.seconds = float(seconds)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def over(self, reserve: float = 0.0) -> bool:
        return self.left() < reserve


def device_info(device: str) -> dict:
    import torch
    info = {"device": device, "torch": torch.__version__, "python": sys.version.split()[0]}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        info["triton"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def whole_model_compare_rows(lines) -> list:
    """Table rows (c, kernel, independent, extra-variance ratio) from samplers.json's
    whole_model_compare entries."""
    rows = []
    for line in lines:
        cells = [f"{line['c']:g}"]
        for nm in [k for k in line if isinstance(line[k], dict)]:
            r = line[nm]
            cells.append(f"{100 * r['relative_increase']:.3g}% ± {100 * (r['relative_increase_se'] or 0):.2g}")
        while len(cells) < 3:
            cells.append("-")
        rat = line.get("ratio_extra_variance_kernel_over_indep")
        cells.append("-" if rat is None else f"{rat:.3f} ± {line['ratio_se']:.2f}")
        rows.append(cells)
    return rows
