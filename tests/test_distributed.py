"""Two CPU processes with the gloo backend: DDP over the SUS op; FSDP2 through backend="sus"."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sus_fx
from helpers import exit_spawned_rank

INF = float("inf")


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.qkv = torch.nn.Linear(16, 48)
        self.out = torch.nn.Linear(16, 1)

    def forward(self, x):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, 2, 8).permute(2, 0, 3, 1, 4)
        y = sus_fx.sus_attention(q, k, v, is_causal=True, c=self.c)
        return self.out(y.transpose(1, 2).reshape(B, L, 16)).mean()


def _data(step):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(4, 10, 16, generator=g)


def _worker(rank, world, port, c, result_path, same_data):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # every rank seeded alike, as most training scripts do
    model = torch.nn.parallel.DistributedDataParallel(Block(c))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    local_grads = []
    for step in range(3):
        x = _data(step)[:2] if same_data else _data(step)[rank * 2:(rank + 1) * 2]
        opt.zero_grad()
        with model.no_sync():
            model(x).backward()
        local_grads.append(model.module.qkv.weight.grad.clone())
        opt.zero_grad()
        model(x).backward()
        opt.step()
    if rank == 0:
        torch.save({"params": [p.detach() for p in model.module.parameters()], "local": local_grads}, result_path)
    else:
        torch.save({"local": local_grads}, result_path + ".1")
    dist.destroy_process_group()
    exit_spawned_rank()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process(c):
    torch.manual_seed(0)
    model = Block(c)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        x = _data(step)
        opt.zero_grad()
        # DDP averages the two ranks' mean losses: the same as the mean over both halves
        (0.5 * (model(x[:2]) + model(x[2:]))).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def _run(tmp_path, c, same_data=False):
    path = str(tmp_path / f"ddp_{c}.pt")
    mp.spawn(_worker, args=(2, _free_port(), c, path, same_data), nprocs=2, join=True)
    return torch.load(path), torch.load(path + ".1")


def test_ddp_exact_mode_matches_single_process_and_ranks_draw_their_own_masks(tmp_path):
    r0, _ = _run(tmp_path, INF)
    for a, b in zip(r0["params"], _single_process(INF)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # With a finite c the two ranks, seeded alike and fed the same data, must still draw different
    # masks: their step-0 local gradients can differ only through the masks.
    r0, r1 = _run(tmp_path, 2.0, same_data=True)
    assert all(torch.isfinite(g).all() for g in r0["local"] + r1["local"])
    assert not torch.equal(r0["local"][0], r1["local"][0])


def test_rank_changes_the_sampling_seed(monkeypatch):
    a = sus_fx.ops.rank_seed_offset()
    monkeypatch.setattr(sus_fx.ops, "_rank", lambda: 1)
    b = sus_fx.ops.rank_seed_offset()
    assert a == 0 and b != 0 and 0 <= b < 2 ** 62


# ----------------------------------------------------------------------------------------------
# FSDP2 (fully_shard) through torch.compile(backend="sus"), two gloo processes

try:
    from torch.distributed.fsdp import fully_shard  # torch >= 2.6
except ImportError:  # pragma: no cover - older torch
    from torch.distributed._composable.fsdp import fully_shard


def _ensure_sus_backend():
    """backend="sus" is the package's entry point; register it by hand when the repo is used
    without `pip install -e .` (the spawned workers import this module afresh)."""
    from torch._dynamo.backends.registry import lookup_backend, register_backend
    try:
        lookup_backend("sus")
    except Exception:
        from sus_fx.backend import sus_backend
        register_backend(compiler_fn=sus_backend, name="sus")


class SdpaBlock(torch.nn.Module):
    """Plain SDPA attention: the sus backend's passes rewrite it into the SUS op."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, 2, 8).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.proj(y.transpose(1, 2).reshape(B, L, 16))


class SdpaNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([SdpaBlock(), SdpaBlock()])
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x).square().mean()


FSDP_STEPS = 3


def _fsdp_worker(rank, world, port, path):
    from torch.distributed.device_mesh import init_device_mesh
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    _ensure_sus_backend()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = SdpaNet()
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    reports = []
    for block in model.blocks:   # compile the blocks (one graph, shared); the root stays eager
        block.compile(backend="sus", fullgraph=True, options={"c": "exact", "report": reports.append})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for step in range(FSDP_STEPS):
        x = _data(step)[rank * 2:(rank + 1) * 2]
        opt.zero_grad()
        loss = model(x)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    sharded = type(model.head.weight).__name__
    params = [p.full_tensor().detach() for p in model.parameters()]   # all-gathers the shards
    if rank == 0:
        torch.save({"params": params, "losses": losses, "sharded": sharded,
                    "sites": sum(len(r.sites) for r in reports)}, path)
    else:
        torch.save({"losses": losses}, path + ".1")
    dist.destroy_process_group()
    exit_spawned_rank()


def test_fsdp2_through_backend_exact_matches_single_process(tmp_path):
    """fully_shard on each block and on the root, then each block compiled with backend="sus"
    (c=exact, fullgraph; the usual FSDP2 + compile pattern, and one shared graph keeps this test
    short), two gloo processes, each on half the batch: the attention is rewritten (the passes see
    FSDP2's unsharded parameters as ordinary inputs), every per-rank loss equals eager's on that
    half, and three SGD steps land where single-process eager training on the whole batch lands. FSDP2 reduce-scatters the mean of the ranks' gradients,
    the gradient of the mean of the two halves' losses, as in the DDP test above."""
    path = str(tmp_path / "fsdp.pt")
    mp.spawn(_fsdp_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    r0, r1 = torch.load(path), torch.load(path + ".1")
    assert r0["sharded"] == "DTensor"
    assert r0["sites"] >= 1
    torch.manual_seed(0)
    ref = SdpaNet()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(FSDP_STEPS):
        x = _data(step)
        opt.zero_grad()
        halves = (ref(x[:2]), ref(x[2:]))
        torch.testing.assert_close(r0["losses"][step], halves[0].detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r1["losses"][step], halves[1].detach(), rtol=1e-5, atol=1e-6)
        (0.5 * (halves[0] + halves[1])).backward()
        opt.step()
    for a, b in zip(r0["params"], ref.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
    # the parameters moved: the comparison is not between two untouched copies of the init
    torch.manual_seed(0)
    assert any(not torch.allclose(a, b) for a, b in zip(r0["params"], SdpaNet().parameters()))
