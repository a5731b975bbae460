"""Distributed random-bases descent: 2 gloo workers on CPU against a one-process simulation of both."""

from pathlib import Path

import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it lazily: once here, before forking, not per worker)
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from training.optim import RandomBasesDescent, chunk_grid, directions

WORLD, STEPS, LR, DIMS, SEED, CHUNK = 2, 3, 0.5, 4, 21, 9
MODULES = [(0, 24), (24, 39)]  # flat ranges of the two Linear layers' parameters
D = 39


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _backward(model: nn.Module, worker: int, step: int) -> torch.Tensor:
    """Worker ``worker``'s own batch at ``step``; returns its flat gradient ``[D]``."""
    model.zero_grad()
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(100 * worker + step), dtype=torch.float64)
    (model(x) ** 2).sum().backward()
    return _flat(p.grad for p in model.parameters())


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    sent = []
    all_gather = dist.all_gather

    def spy(tensor_list, tensor, *args, **kwargs):
        sent.append(tensor.numel())
        return all_gather(tensor_list, tensor, *args, **kwargs)

    dist.all_gather = spy
    model = _model()
    opt = RandomBasesDescent(model.named_parameters(), lr=LR, dims=DIMS, compartments="module", seed=SEED,
                             chunk_size=CHUNK)
    for step in range(STEPS):
        _backward(model, rank, step)
        opt.step()
    torch.save({"theta": _flat(model.parameters()).detach(), "sent": sent}, Path(out_dir) / f"{rank}.pt")
    dist.destroy_process_group()


def _dense(n: int, *, step: int, compartment: int, worker: int) -> torch.Tensor:
    rows, cols = chunk_grid(DIMS, n, CHUNK)
    n_blocks = -(-n // cols)
    v = torch.empty(DIMS, n, dtype=torch.float64)
    for r0 in range(0, DIMS, rows):
        for b in range(n_blocks):
            r1, c0, c1 = min(r0 + rows, DIMS), b * cols, min((b + 1) * cols, n)
            v[r0:r1, c0:c1] = directions(r1 - r0, c1 - c0, seed=SEED, step=step, compartment=compartment,
                                         chunk=(r0 // rows) * n_blocks + b, worker=worker, dtype=torch.float64)
    return v


def _simulate() -> torch.Tensor:
    """theta -= lr / (D W) sum_w blockdiag(V_w^T V_w) g_w, every worker's gradient at the shared theta."""
    model = _model()
    for step in range(STEPS):
        grads = [_backward(model, w, step) for w in range(WORLD)]
        theta = _flat(model.parameters()).detach().clone()
        for w, g in enumerate(grads):
            for ci, (a, b) in enumerate(MODULES):
                v = _dense(b - a, step=step, compartment=ci, worker=w)
                theta[a:b] -= LR / (D * WORLD) * (v.T @ (v @ g[a:b]))
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta, model.parameters())
    return _flat(model.parameters()).detach()


def test_two_gloo_workers_match_simulation_and_send_only_coefficients(tmp_path):
    # fork, not spawn: the workers inherit the imported torch instead of importing it again (seconds each)
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, start_method="fork")
    results = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(WORLD)]
    assert torch.equal(results[0]["theta"], results[1]["theta"])
    for result in results:
        assert result["sent"] == [DIMS * len(MODULES)] * STEPS
    torch.testing.assert_close(results[0]["theta"], _simulate(), rtol=0, atol=1e-10)
