"""Edge cases of the op: NaN, Lq = 1, empty batches, strided inputs, autocast, GradScaler."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sus_fx
from helpers import INF, exact_grads, sus_grads


@pytest.mark.parametrize("c", [INF, 2.0])
def test_nan_propagates_like_sdpa(c):
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    q[0, 0, 1, 2] = float("nan")
    qq = q.clone().requires_grad_()
    out = sus_fx.sus_attention(qq, k, v, c=c)
    ref = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(out.isnan(), ref.isnan())
    out.sum().backward()
    assert qq.grad[0, 0, 1].isnan().all(), "the NaN row's gradient must be NaN, not hidden"
    assert not qq.grad[0, 1].isnan().any()


def test_single_query_row_and_long_keys():
    q, k, v = torch.randn(2, 2, 1, 8), torch.randn(2, 2, 40, 8), torch.randn(2, 2, 40, 8)
    g = torch.randn(2, 2, 1, 8)
    for a, b in zip(sus_grads(q, k, v, g, INF), exact_grads(q, k, v, g)):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


def test_empty_batch():
    q = torch.randn(0, 2, 4, 8, requires_grad=True)
    k = torch.randn(0, 2, 4, 8)
    out = sus_fx.sus_attention(q, k, k)
    assert out.shape == (0, 2, 4, 8)
    out.sum().backward()
    assert q.grad.shape == q.shape


def test_non_contiguous_and_stride_zero_inputs():
    q = torch.randn(1, 4, 2, 8).transpose(1, 2)
    k = torch.randn(1, 4, 2, 8).transpose(1, 2)
    v = torch.randn(1, 8, 2, 4).permute(0, 2, 3, 1)  # last dim strided
    kb = torch.randn(1, 1, 4, 8).expand(1, 2, 4, 8)  # stride-0 head dim
    g = torch.randn(1, 2, 4, 8)
    for kk in (k, kb):
        out = sus_fx.sus_attention(q, kk, v)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, kk, v), rtol=1e-5, atol=1e-6)
        for a, b in zip(sus_grads(q, kk, v, g, INF), exact_grads(q, kk, v, g)):
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


def test_autocast_bf16_with_fp32_weights():
    lin = torch.nn.Linear(8, 24)
    x = torch.randn(1, 2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = lin(x).chunk(3, -1)
        out = sus_fx.sus_attention(q, k, v, c=INF)
        ref = F.scaled_dot_product_attention(q, k, v)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert lin.weight.grad.dtype == torch.float32 and torch.isfinite(lin.weight.grad).all()


def test_fp16_with_grad_scaler_step():
    model = torch.nn.Linear(8, 24)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randn(2, 2, 6, 8)
    with torch.autocast("cpu", dtype=torch.float16):
        q, k, v = model(x).chunk(3, -1)
        loss = sus_fx.sus_attention(q, k, v, is_causal=True, c=4.0).float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(model.weight).all()
    assert scaler.get_scale() == 1024.0, "no inf/NaN gradients were expected"


def test_deterministic_algorithms_mode_is_honored_on_cpu():
    q, k, v = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    g = torch.randn(1, 2, 6, 8)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(5)
        a = sus_grads(q, k, v, g, 2.0)
        torch.manual_seed(5)
        b = sus_grads(q, k, v, g, 2.0)
    finally:
        torch.use_deterministic_algorithms(prev)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_activation_checkpointing_replays_the_same_dropout_mask():
    """torch.utils.checkpoint recomputes the forward in the backward; the op draws its dropout
    seed from torch's generator, which checkpoint restores, so gradients match no checkpointing."""
    from torch.utils.checkpoint import checkpoint

    lin = torch.nn.Linear(8, 24)
    x = torch.randn(2, 2, 6, 8)

    def block(x):
        q, k, v = lin(x).chunk(3, -1)
        return sus_fx.sus_attention(q, k, v, dropout_p=0.3, c=INF)

    grads = []
    for use_ckpt in (False, True):
        lin.zero_grad()
        torch.manual_seed(11)
        y = checkpoint(block, x, use_reentrant=False) if use_ckpt else block(x)
        y.pow(2).sum().backward()
        grads.append(lin.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_dynamic_shapes_compile_once_for_varying_lengths():
    from torch._dynamo.testing import CompileCounter

    cnt = CompileCounter()
    f = torch.compile(lambda q: sus_fx.sus_attention(q, q, q, is_causal=True, c=4.0).sum(), backend=cnt,
                      dynamic=True, fullgraph=True)
    for L in (5, 9, 13, 21):
        f(torch.randn(2, 2, L, 16, requires_grad=True)).backward()
    assert cnt.frame_count == 1
