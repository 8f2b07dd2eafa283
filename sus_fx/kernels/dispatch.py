"""Chooses a device kernel for the op, or returns None so the caller uses the reference.

The reference (sus_fx/reference.py) runs on any device; this module routes CUDA tensors to the
fast paths as they land.
"""
from __future__ import annotations


def forward(query, key, value, attn_mask, is_causal, scale, dropout_p):
    """(out, lse) from a fast exact kernel, or None."""
    return None


def backward(grad_out, query, key, value, attn_mask, out, lse, seed, dropout_p, is_causal, scale, c, sample_seed):
    """(dq, dk, dv) from the SUS kernels, or None."""
    return None
