"""Random directions generated on demand, in chunks, from counter-based seeds.

A compartment with ``n`` parameters and ``d`` directions has a direction matrix ``V [d, n]``
with i.i.d. unit-variance entries (the optimizer applies the ``1/sqrt(D)`` scaling). ``V`` is
never stored: it is cut into a grid of chunks (:func:`chunk_grid`), ``rows x cols`` each, with
chunk ``k = row_block * n_col_blocks + col_block`` covering ::

    V[row_block * rows : (row_block + 1) * rows,  col_block * cols : (col_block + 1) * cols]

(the last row and column blocks may be smaller), and every chunk is regenerated from its own
seed whenever it is needed::

    chunk_seed(seed, step, compartment, chunk, worker)
        = (splitmix64 hash of (seed, step, compartment, worker) + chunk)  mod 2**64

so the same counters always give the same numbers, on any schedule of chunk visits.

Distributions (all zero mean, unit variance):

- ``"normal"``: N(0, 1);
- ``"uniform"``: U(-sqrt(3), sqrt(3));
- ``"bernoulli"``: +1 or -1 with probability 1/2 each (Rademacher).

Streams. Each chunk is drawn by torch's own generator of the chunk's device, freshly seeded
with the chunk seed: MT19937 on CPU, Philox on CUDA. The two give **different numbers for the
same seed**, and so does a different dtype (float32 vs float64) or chunk grid: same seed,
device type, dtype and chunk size give the same directions. The CPU generator keeps only the
low 32 bits of a seed; adding the chunk index *after* hashing keeps the chunks of one
compartment at one step distinct even so (up to 2**32 chunks), while two chunks of different
(step, compartment, worker) share a stream with probability ~2**-32 per pair.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform", "bernoulli")

_MASK64 = (1 << 64) - 1
_SQRT3 = math.sqrt(3.0)


def _splitmix64(x: int) -> int:
    """One round of the splitmix64 output function on a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def chunk_seed(seed: int, step: int, compartment: int, chunk: int, worker: int = 0) -> int:
    """The 64-bit seed of one chunk of directions.

    Args:
        seed: the run's seed (any integer; taken mod 2**64).
        step: the optimizer step the directions belong to (0 for a fixed basis).
        compartment: index of the compartment.
        chunk: index of the chunk inside the compartment's grid (see :func:`chunk_grid`).
        worker: rank of the worker drawing the directions (0 without ``torch.distributed``).
    """
    h = 0
    for word in (seed, step, compartment, worker):
        h = _splitmix64(h ^ (word & _MASK64))
    return (h + chunk) & _MASK64


def chunk_grid(dims: int, numel: int, chunk_numel: int) -> tuple[int, int]:
    """Shape ``(rows, cols)`` of the chunks of a ``[dims, numel]`` direction matrix.

    Whole rows when one row fits the budget (``rows = min(dims, chunk_numel // numel)``,
    ``cols = numel``); otherwise one row cut into pieces of ``chunk_numel`` columns. Either
    way ``rows * cols <= max(chunk_numel, 1)``.
    """
    if numel <= chunk_numel:
        return max(1, min(dims, chunk_numel // numel)), numel
    return 1, chunk_numel


def fill_directions(out: Tensor, seed: int, distribution: str, generator: torch.Generator) -> Tensor:
    """Fill ``out`` (any shape) in place with unit-variance entries drawn from ``seed``.

    ``generator`` must live on ``out``'s device; it is reseeded, so its prior state is irrelevant.
    """
    generator.manual_seed(seed)
    if distribution == "normal":
        return out.normal_(generator=generator)
    if distribution == "uniform":
        return out.uniform_(-_SQRT3, _SQRT3, generator=generator)
    if distribution == "bernoulli":
        return out.random_(0, 2, generator=generator).mul_(2.0).sub_(1.0)
    raise ValueError(f"unknown distribution {distribution!r}; valid: {', '.join(DISTRIBUTIONS)}")


def directions(rows: int, cols: int, *, seed: int, step: int, compartment: int, chunk: int,
               worker: int = 0, distribution: str = "normal", dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> Tensor:
    """One chunk of directions, ``[rows, cols]``, exactly as the optimizers draw it.

    ``(rows, cols)`` must be the chunk's actual shape in the grid (smaller for the last row or
    column block), since the shape decides which numbers go where.
    """
    device = torch.device(device)
    out = torch.empty(rows, cols, dtype=dtype, device=device)
    generator = torch.Generator(device=device)
    return fill_directions(out, chunk_seed(seed, step, compartment, chunk, worker), distribution,
                           generator)
