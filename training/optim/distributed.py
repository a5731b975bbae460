"""The only communication of distributed random-bases descent: an all-gather of coefficients.

Each of W workers backprops its own batch, projects its own gradient on its own directions
(worker index in the chunk seeds) and sends its ``k`` coefficients, ``k = dims x compartments``;
every worker then holds all ``[W, k]`` coefficients and regenerates every worker's directions
to rebuild the averaged update locally. Traffic per step: ``W * k`` floats, independent of D.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process in ``group``; ``(0, 1)`` without ``torch.distributed``."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def all_gather_coefficients(coefficients: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Gather every worker's coefficients: ``[k]`` in, ``[world_size, k]`` out, rank order.

    Works with gloo (CPU tensors) and nccl (CUDA tensors); the values arrive bit for bit, so
    every worker rebuilds the same update.
    """
    _, size = world(group)
    parts = [torch.empty_like(coefficients) for _ in range(size)]
    dist.all_gather(parts, coefficients.contiguous(), group=group)
    return torch.stack(parts)
