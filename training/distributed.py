"""Training on several processes under ``torchrun``.

``torchrun --nproc_per_node=2 -m training.cli train --task copy`` starts one trainer per
process. Each worker samples its own batches (the data seed is offset by its rank). With
sgd or adam the model is wrapped in DistributedDataParallel, which averages gradients;
with rbd or fpd each worker projects its own gradient and only the coefficients travel
(see :mod:`training.optim.distributed`). Every worker ends each step with the same
parameters; only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import inspect
import os
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class Workers(NamedTuple):
    """This process's place among the workers."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the worker that logs and checkpoints."""
        return self.rank == 0


def setup_workers(device: torch.device) -> tuple[Workers, torch.device]:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA).

    Without ``WORLD_SIZE`` > 1 this is a single worker and nothing is initialised. On CUDA
    each worker takes the GPU of its ``LOCAL_RANK``. Returns the workers and the device to use.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Workers(0, 1), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Workers(dist.get_rank(), dist.get_world_size()), device


def data_parallel_model(model: nn.Module) -> DistributedDataParallel:
    """``model`` wrapped so that a step's last backward averages gradients over the workers.

    Its buffers are never synchronised in the forward pass: the only one is a constant, and a
    broadcast per forward would pair up wrongly (and can hang) when workers run different
    numbers of rollouts in one step, as they do whenever their batches hold different sets of
    lengths. Newer torch names the option ``forward_sync_buffers``; older torch ``broadcast_buffers``.
    """
    parameters = inspect.signature(DistributedDataParallel).parameters
    option = "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"
    return DistributedDataParallel(model, **{option: False})


def shutdown_workers(workers: Workers) -> None:
    """Leave the process group once every worker has finished (nothing to do for one worker).

    The barrier keeps any worker from tearing down its connections while another still
    has a collective in flight.
    """
    if workers.world_size == 1 or not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()


def sum_across_workers(values: list[float], workers: Workers, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all workers (identity for one worker)."""
    if workers.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(value: object, workers: Workers) -> list[object]:
    """Every worker's ``value`` in rank order (``[value]`` for one worker)."""
    if workers.world_size == 1:
        return [value]
    gathered: list[object] = [None] * workers.world_size
    dist.all_gather_object(gathered, value)
    return gathered
