"""Opt-in recording of what each SUS backward kept.

    with sus_fx.stats() as rec:
        loss.backward()
    print(rec.summary())          # kept per row (mean, max), fraction of entries cut, and (GPU
                                  # kernels) union per row block, blocks over the union capacity

Backward implementations call `record(...)` only while a recorder is active
(`recording()` is a cheap global check), so the default path costs nothing.
Under torch.compile the op's backward runs as an opaque kernel call, so the
recorder sees compiled backwards too.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Iterator, List, Optional

# Global, not thread-local: autograd runs CUDA backwards on its own device threads.
_lock = threading.Lock()
_active: list = []


@dataclasses.dataclass
class BackwardRecord:
    """One call of the SUS attention backward."""

    shape: tuple  # (B, H, Lq, Lk)
    c: float
    rows: int  # query rows with at least one unmasked key
    kept_total: float  # kept (i, j) entries, summed over rows
    kept_max: float  # most entries kept in one row
    valid_total: float  # unmasked (i, j) entries: what the exact backward touches
    site: Optional[str] = None
    # The kernels' row blocks (0 for the CPU reference, which has none): each block's backward runs
    # on the union of the columns its rows keep. A union over the capacity sends its block down
    # the all-columns path, exact in its decisions but as slow as a dense backward.
    blocks: int = 0
    union_total: float = 0.0  # union columns, summed over blocks
    union_max: float = 0.0  # the largest union of one block
    blocks_over_capacity: int = 0
    capacity: int = 0  # union slots per block

    @property
    def union_per_block_mean(self) -> float:
        return self.union_total / self.blocks if self.blocks else 0.0

    @property
    def kept_per_row_mean(self) -> float:
        return self.kept_total / self.rows if self.rows else 0.0

    @property
    def fraction_cut(self) -> float:
        return 1.0 - self.kept_total / self.valid_total if self.valid_total else 0.0


class StatsRecorder:
    def __init__(self) -> None:
        self.records: List[BackwardRecord] = []

    def summary(self) -> dict:
        rows = sum(r.rows for r in self.records)
        kept = sum(r.kept_total for r in self.records)
        valid = sum(r.valid_total for r in self.records)
        out = {
            "backwards": len(self.records),
            "kept_per_row_mean": kept / rows if rows else 0.0,
            "kept_per_row_max": max((r.kept_max for r in self.records), default=0.0),
            "fraction_cut": 1.0 - kept / valid if valid else 0.0,
        }
        blocks = sum(r.blocks for r in self.records)
        if blocks:  # the GPU kernels' union statistics
            out.update(
                union_per_block_mean=sum(r.union_total for r in self.records) / blocks,
                union_per_block_max=max(r.union_max for r in self.records),
                fraction_blocks_over_capacity=sum(r.blocks_over_capacity for r in self.records) / blocks)
        return out

    def __repr__(self) -> str:
        s = self.summary()
        union = union_text(s)
        return (
            f"StatsRecorder({s['backwards']} backwards, kept/row mean {s['kept_per_row_mean']:.2f} "
            f"max {s['kept_per_row_max']:.0f}, cut {100 * s['fraction_cut']:.2f}%{', ' + union if union else ''})"
        )


def union_text(summary: dict) -> str:
    """The union statistics of a StatsRecorder.summary() in words ('' where the backwards ran on
    the CPU reference, which has no row blocks)."""
    if "union_per_block_mean" not in summary:
        return ""
    return (f"union/block mean {summary['union_per_block_mean']:.0f} max {summary['union_per_block_max']:.0f}, "
            f"{100 * summary['fraction_blocks_over_capacity']:.1f}% of blocks over capacity")


@contextlib.contextmanager
def stats() -> Iterator[StatsRecorder]:
    """Record, for every SUS backward run inside the block, the kept entries per query row."""
    rec = StatsRecorder()
    with _lock:
        _active.append(rec)
    try:
        yield rec
    finally:
        with _lock:
            _active.remove(rec)


def recording() -> bool:
    return bool(_active)


def record(r: BackwardRecord) -> None:
    with _lock:
        for rec in _active:
            rec.records.append(r)
