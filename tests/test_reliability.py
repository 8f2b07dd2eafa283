"""Reliability of backend="sus" in real training (issue 6), at the backend level, on CPU.

Covered here (the op-level cases live in test_op.py / test_op_edge_cases.py, DDP in
test_distributed.py; the table is notes/RELIABILITY.md):

- recompile counts stable across training steps with fullgraph=True;
- torch.compile(dynamic=True) with varying sequence lengths compiles once;
- activation checkpointing (torch.utils.checkpoint) around SUS attention: c=inf gradients equal
  eager, the dropout mask is not redrawn by the recomputation; HF gradient_checkpointing_enable()
  on a tiny LLaMA;
- failure isolation: an op error at compile time falls back to plain Inductor (strict raises);
  an op/kernel error at run time is the user's exception, not a fallback;
- torch.use_deterministic_algorithms(True) through the backend, same seed -> same gradients.

Each test compiles with real Inductor once or twice (5-20 s each on the CI CPU).
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import sus_fx
from sus_fx.backend import SusFallbackWarning

INF = float("inf")


class Attn(nn.Module):
    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-2, -1)) * (D // self.heads) ** -0.5
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        y = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Net(nn.Module):
    def __init__(self, dim=16, layers=2, ckpt=False):
        super().__init__()
        self.layers = nn.ModuleList([Attn(dim) for _ in range(layers)])
        self.head = nn.Linear(dim, dim)
        self.ckpt = ckpt

    def forward(self, x):
        for layer in self.layers:
            x = x + (checkpoint(layer, x, use_reentrant=False) if self.ckpt else layer(x))
        return self.head(x)


def _graphs():
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _assert_all_close(a, b, **kw):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **kw)


def _assert_step_matches_eager(out, model, ref, x):
    """Backward through `out` (model's compiled output on x) and through ref(x), an eager copy:
    outputs and parameter gradients must agree."""
    out.square().mean().backward()
    r = ref(x)
    r.square().mean().backward()
    torch.testing.assert_close(out, r, rtol=1e-4, atol=1e-5)
    _assert_all_close(_grads(model), _grads(ref), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Inputs: inf (NaN is in test_op_edge_cases.py)

@pytest.mark.parametrize("where,val", [("q", INF), ("k", -INF), ("v", INF)])
@pytest.mark.parametrize("c", [INF, 2.0])
def test_inf_inputs_propagate_like_sdpa(where, val, c):
    """An inf in q, k or v: the op's non-finite outputs and gradients are where SDPA's are."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=g) for _ in range(3))
    dict(q=q, k=k, v=v)[where][0, 0, 1, 2] = val
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    out = sus_fx.sus_attention(qa, k, v, c=c)
    ref = F.scaled_dot_product_attention(qb, k, v)
    assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())
    assert not out.isfinite().all()
    out.sum().backward()
    ref.sum().backward()
    assert torch.equal(qa.grad.isfinite(), qb.grad.isfinite())
    torch.testing.assert_close(out[out.isfinite()], ref[out.isfinite()], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Compilation: recompiles, dynamic shapes

@pytest.mark.slow
def test_training_steps_do_not_recompile_and_exact_training_matches_eager():
    torch.manual_seed(0)
    model, ref = Net(), None
    ref = copy.deepcopy(model)
    reports = []
    torch._dynamo.reset()
    graphs_before = _graphs()
    step = torch.compile(model, backend="sus", fullgraph=True, options={"c": "exact", "report": reports.append})
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for i in range(4):
        x = torch.randn(2, 6, 16, generator=g)
        for m, o, f in ((model, opt, step), (ref, ref_opt, ref)):
            o.zero_grad()
            f(x).square().mean().backward()
            o.step()
        if i == 0:
            n_reports, n_graphs = len(reports), _graphs() - graphs_before
    # one Dynamo graph, one backend call, compiled in step 0 and never again
    assert n_reports == len(reports) == 1 and n_graphs == _graphs() - graphs_before == 1
    assert len(reports[0].sites) == 2 and not reports[0].skipped
    # c = inf: four SGD steps through the backend land where eager training lands
    _assert_all_close([p.detach() for p in model.parameters()], [p.detach() for p in ref.parameters()],
                      rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_dynamic_shapes_varying_lengths_compile_once():
    """dynamic=True: lengths 5, 7, 11, 13 (none equal to another size of the graph, so duck sizing
    never merges L with B=2, D=16, heads=2 or head dim 8) run through one compiled graph."""
    torch.manual_seed(0)
    model = Net(layers=1)
    ref = copy.deepcopy(model)
    reports = []
    torch._dynamo.reset()
    graphs_before = _graphs()
    f = torch.compile(model, backend="sus", dynamic=True, fullgraph=True,
                      options={"c": "exact", "report": reports.append})
    for L in (5, 7, 11, 13, 7):
        x = torch.randn(2, L, 16)
        model.zero_grad()
        ref.zero_grad()
        _assert_step_matches_eager(f(x), model, ref, x)
    assert len(reports) == 1 and _graphs() - graphs_before == 1
    (site,) = reports[0].sites
    assert any(not isinstance(d, int) for d in site.q_shape), site.q_shape  # L stayed symbolic


# ----------------------------------------------------------------------------------------------
# Activation checkpointing

@pytest.mark.slow
def test_checkpointed_sus_op_with_dropout_keeps_its_mask_and_exact_grads_equal_eager():
    """torch.utils.checkpoint around sus_attention (dropout 0.3, c=inf) compiled with backend="sus":
    the region becomes Dynamo's tag_activation_checkpoint; the op is tagged
    nondeterministic_seeded so the partitioner saves its outputs instead of recomputing it (a
    recompute would draw a new dropout seed). Same seed: output and gradients equal eager without
    checkpointing."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 48)

    def block(x):
        B, L, _ = x.shape
        q, k, v = lin(x).view(B, L, 3, 2, 8).permute(2, 0, 3, 1, 4)
        return sus_fx.sus_attention(q, k, v, dropout_p=0.3, is_causal=True, c=INF)

    def ckpt(x):
        return checkpoint(block, x, use_reentrant=False).pow(2).sum()

    x = torch.randn(2, 5, 16)
    results = []
    torch._dynamo.reset()
    for fn in (lambda x: block(x).pow(2).sum(), torch.compile(ckpt, backend="sus", fullgraph=True)):
        lin.zero_grad()
        torch.manual_seed(3)
        y = fn(x)
        y.backward()
        results.append((y.detach(), lin.weight.grad.clone(), lin.bias.grad.clone()))
    (y0, *g0), (y1, *g1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    _assert_all_close(g1, g0, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_checkpointed_explicit_attention_exact_grads_equal_eager():
    """torch.utils.checkpoint over explicit-attention layers, backend="sus", c=exact: the layers
    inside the checkpoint subgraphs are rewritten, and outputs and gradients equal eager."""
    torch.manual_seed(0)
    model = Net(ckpt=True)
    ref = copy.deepcopy(model)
    reports = []
    torch._dynamo.reset()
    f = torch.compile(model, backend="sus", fullgraph=True, options={"c": "exact", "report": reports.append})
    x = torch.randn(2, 6, 16)
    _assert_step_matches_eager(f(x), model, ref, x)
    assert len(reports) == 1
    assert "tag_activation_checkpoint" in reports[0].graph_before
    assert len(reports[0].sites) == len(model.layers)


def test_attention_inside_checkpoint_is_rewritten():
    from passes import rewrite_attention
    from passes.testing import capture, exact

    model = Net(layers=1, ckpt=True)
    gm, _ = capture(model, torch.randn(2, 6, 16))
    res = rewrite_attention(gm, exact)
    assert len(res.sites) == 1 and not res.skipped, res


def _tiny_llama(transformers):
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=64, attention_dropout=0.0,
                                   max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg)


def test_hf_llama_gradient_checkpointing_layers_are_rewritten():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _tiny_llama(transformers)
    model.set_attn_implementation("eager")
    model.train()
    model.gradient_checkpointing_enable()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    report = sus_fx.inspect(model, input_ids=ids, labels=ids)
    assert len(report.sites) == 1 and not report.skipped, report


@pytest.mark.slow
def test_hf_llama_gradient_checkpointing_trains_through_backend():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _tiny_llama(transformers)
    model.set_attn_implementation("eager")
    model.train()
    model.gradient_checkpointing_enable()   # transformers 5.x: non-reentrant torch.utils.checkpoint
    assert model.is_gradient_checkpointing
    ref = copy.deepcopy(model)
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    reports = []
    torch._dynamo.reset()
    f = torch.compile(model, backend="sus", options={"c": "exact", "report": reports.append})
    loss = f(input_ids=ids, labels=ids).loss
    loss.backward()
    ref_loss = ref(input_ids=ids, labels=ids).loss
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)
    assert reports, "the backend compiled no graph"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Failure isolation

@pytest.mark.slow
def test_op_error_at_compile_time_falls_back_and_strict_raises(monkeypatch):
    """An error inside the op while Inductor/AOTAutograd traces the rewritten graph is a compile
    failure: the graph is compiled with plain Inductor (no SUS), with a SusFallbackWarning naming
    the error; strict=True raises it instead."""
    def boom(*args, **kwargs):
        raise RuntimeError("op check exploded")

    monkeypatch.setattr(sus_fx.ops, "check_inputs", boom)
    torch.manual_seed(0)
    model = Net(layers=1)
    x = torch.randn(2, 6, 16)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="op check exploded"):
        torch.compile(model, backend="sus", options={"strict": True})(x)
    reports = []
    torch._dynamo.reset()
    with pytest.warns(SusFallbackWarning, match="(?s)op check exploded.*plain Inductor"):
        out = torch.compile(model, backend="sus", options={"report": reports.append})(x)
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
    out.sum().backward()   # the fallback graph trains
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert "op check exploded" in reports[0].graphs[0].error


@pytest.mark.slow
def test_pass_error_falls_back_to_plain_inductor_and_trains(monkeypatch):
    """The passes raising on a graph: a SusFallbackWarning, then the pristine copy of the graph
    compiles with real Inductor and trains. (Regression: the copy lost the placeholders'
    `_dynamo_source`, and AOTAutograd on torch 2.13 then failed the fallback compile too.)"""
    import passes

    def boom(gm, choose_c, **_):
        raise RuntimeError("pattern exploded")

    monkeypatch.setattr(passes, "rewrite_attention", boom)
    torch.manual_seed(0)
    model = Net(layers=1)
    ref = copy.deepcopy(model)
    x = torch.randn(2, 6, 16)
    torch._dynamo.reset()
    with pytest.warns(SusFallbackWarning, match="pattern exploded"):
        out = torch.compile(model, backend="sus", fullgraph=True)(x)
    _assert_step_matches_eager(out, model, ref, x)


@pytest.mark.slow
def test_op_error_at_run_time_is_raised_to_the_user_not_a_fallback(monkeypatch):
    """A kernel error while a compiled step runs (here: the CPU backward raising) is not a compile
    failure: no fallback, no SusFallbackWarning, strict or not. loss.backward() raises the op's own
    exception; the compiled model is not poisoned and the next step works."""
    torch.manual_seed(0)
    model = Net(layers=1)
    x = torch.randn(2, 6, 16)
    torch._dynamo.reset()
    f = torch.compile(model, backend="sus", options={"c": 4})
    f(x).sum().backward()
    import sus_fx.reference as reference
    real = reference.backward

    def boom(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(reference, "backward", boom)
    model.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SusFallbackWarning)
        out = f(x)                        # the forward does not touch the backward
        with pytest.raises(RuntimeError, match="kernel exploded"):
            out.sum().backward()
    monkeypatch.setattr(reference, "backward", real)
    model.zero_grad()
    f(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Randomness

@pytest.mark.slow
def test_deterministic_algorithms_through_backend_same_seed_same_grads():
    """use_deterministic_algorithms(True) is honored (no error) on CPU through backend="sus"; the
    same torch.manual_seed gives bitwise the same SUS gradients, another seed other masks."""
    torch.manual_seed(0)
    model = Net(layers=1)
    x = torch.randn(2, 9, 16)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch._dynamo.reset()
        f = torch.compile(model, backend="sus", fullgraph=True, options={"c": 1.0})
        grads = []
        for seed in (7, 7, 8):
            model.zero_grad()
            torch.manual_seed(seed)
            f(x).square().mean().backward()
            grads.append(_grads(model))
    finally:
        torch.use_deterministic_algorithms(prev)
    for a, b in zip(grads[0], grads[1]):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(grads[0], grads[2]))


# ----------------------------------------------------------------------------------------------
# Distributed: DDP (gloo, two CPU processes) through backend="sus"

def _ddp_worker(rank, world, port, path):
    import os

    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)   # ranks seeded alike, as most scripts do
    model = nn.parallel.DistributedDataParallel(Net(layers=1))
    reports = []
    f = torch.compile(model, backend="sus", options={"c": 1.0, "report": reports.append})
    x = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(5))   # same data on both ranks
    with model.no_sync():
        f(x).square().mean().backward()
    local = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    f(x).square().mean().backward()
    synced = [p.grad.clone() for p in model.parameters()]
    torch.save({"local": local, "synced": synced, "sites": sum(len(r.sites) for r in reports)},
               f"{path}.{rank}")
    dist.destroy_process_group()
    from helpers import exit_spawned_rank
    exit_spawned_rank()


@pytest.mark.slow
def test_ddp_gloo_through_backend_ranks_draw_their_own_masks(tmp_path):
    """DDP + torch.compile(backend="sus") on two gloo processes, seeded alike, same data: the
    attention is rewritten under DDP's graph handling, the ranks' local SUS gradients differ (the
    rank is mixed into the sampling seed; under compile it is read when the backward is traced,
    so the process group must exist before the first compile, as it does here), and the
    all-reduced gradients agree across ranks."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = str(tmp_path / "ddp")
    mp.spawn(_ddp_worker, args=(2, port, path), nprocs=2, join=True)
    r0, r1 = torch.load(f"{path}.0"), torch.load(f"{path}.1")
    assert r0["sites"] >= 1 and r1["sites"] >= 1
    assert all(torch.isfinite(g).all() for g in r0["local"] + r1["local"])
    assert any(not torch.equal(a, b) for a, b in zip(r0["local"], r1["local"]))
    _assert_all_close(r0["synced"], r1["synced"], rtol=1e-6, atol=1e-7)


def test_dropout_inside_checkpoint_is_left_alone_with_a_reason():
    """A checkpointed region is recomputed in the backward, where the op would draw a new dropout
    mask; such sites stay as they are and the report says why."""
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    from passes import rewrite_attention
    from passes.testing import capture, exact

    def f(q, k, v):
        body = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)  # noqa: E731
        return checkpoint(body, q, k, v, use_reentrant=False)

    gm, _ = capture(f, *(torch.randn(1, 2, 4, 8) for _ in range(3)))
    res = rewrite_attention(gm, exact)
    assert not res.sites and len(res.skipped) == 1 and "checkpoint" in res.skipped[0].reason
