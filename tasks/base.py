"""The task interface: a task turns (batch size, length, memory size, RNG) into memories.

A :class:`TaskBatch` holds, for every example, the machine's initial memory, the memory it
should end with and which cells are scored:

- ``memory``  ``LongTensor[B, M]``: initial cells, integers in ``0..M-1``;
- ``target``  ``LongTensor[B, M]``: desired final cells (equal to ``memory`` outside the
  cells the task changes);
- ``mask``    ``BoolTensor[B, M]``: cells that count towards the loss and the error.

Subclasses implement :meth:`Task._memory_needed` and :meth:`Task._generate`; this class
validates arguments, moves results to a device and mixes lengths within one batch.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple, Sequence

import torch
from torch import Tensor


class TaskBatch(NamedTuple):
    """Initial memory ``[B, M]``, desired final memory ``[B, M]`` (long) and scored cells ``[B, M]`` (bool)."""

    memory: Tensor
    target: Tensor
    mask: Tensor


class Task(ABC):
    """An algorithmic task on an M-cell integer memory, sampled for a given length n."""

    name: ClassVar[str]
    """Lower-case name used by :func:`tasks.get_task`, e.g. ``"listk"``."""
    title: ClassVar[str]
    """Name as written in the paper and in Gymnasium ids, e.g. ``"ListK"``."""
    min_length: ClassVar[int] = 1
    """The smallest length n the task is defined for."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @abstractmethod
    def _memory_needed(self, length: int) -> int:
        """Cells that the layout of length ``length`` needs (``length`` already validated)."""

    @abstractmethod
    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        """Sample a valid batch on the CPU, drawing randomness only from ``generator``."""

    def check_length(self, length: int) -> int:
        """``length`` as an ``int``; ``ValueError`` unless it is an integer >= :attr:`min_length`."""
        value = _integer(length)
        if value is None or value < self.min_length:
            raise ValueError(f"task {self.name!r}: length must be an integer >= {self.min_length}, got {length!r}")
        return value

    def min_memory_size(self, length: int) -> int:
        """The smallest memory size M that holds an example of length ``length``."""
        return self._memory_needed(self.check_length(length))

    def max_length(self, memory_size: int) -> int:
        """The largest length whose examples fit in ``memory_size`` cells (``ValueError`` if none)."""
        if memory_size < self._memory_needed(self.min_length):
            raise ValueError(f"task {self.name!r}: memory_size must be >= "
                             f"{self._memory_needed(self.min_length)}, got {memory_size}")
        length = self.min_length
        while self._memory_needed(length + 1) <= memory_size:
            length += 1
        return length

    def check_sizes(self, batch_size: int, length: int, memory_size: int) -> tuple[int, int, int]:
        """The sizes as ``int``s; ``ValueError`` saying the valid range if any is out of range."""
        batch = _integer(batch_size)
        if batch is None or batch < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        length = self.check_length(length)
        needed = self._memory_needed(length)
        memory = _integer(memory_size)
        if memory is None or memory < needed:
            raise ValueError(f"task {self.name!r} at length {length} needs memory_size >= {needed}, "
                             f"got {memory_size!r}")
        return batch, length, memory

    def sample(self, batch_size: int, length: int, memory_size: int,
               generator: torch.Generator | None = None, *,
               device: torch.device | str | None = None) -> TaskBatch:
        """Sample ``batch_size`` examples of length ``length`` in ``memory_size`` cells.

        Returns a :class:`TaskBatch` of ``[batch_size, memory_size]`` tensors. Randomness comes
        only from ``generator`` (a CPU ``torch.Generator``; ``None`` uses torch's global one),
        so the same seed gives the same batch. The batch is built on the CPU, then moved to
        ``device``.
        """
        batch_size, length, memory_size = self.check_sizes(batch_size, length, memory_size)
        _check_generator(generator)
        batch = self._generate(batch_size, length, memory_size, generator)
        return _to_device(batch, device)

    def sample_mixed(self, lengths: Tensor | Sequence[int], memory_size: int,
                     generator: torch.Generator | None = None, *,
                     device: torch.device | str | None = None) -> TaskBatch:
        """Sample one example per entry of ``lengths`` (``[B]``), all in ``memory_size`` cells.

        Examples of equal length are sampled together, shortest length first, and put back
        in the order of ``lengths``; so a curriculum's per-example lengths become one batch
        at a common memory size. ``memory_size`` must fit the longest length.
        """
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.ndim != 1 or lengths.numel() == 0:
            raise ValueError(f"lengths must be a non-empty 1-D sequence, got shape {tuple(lengths.shape)}")
        distinct = [int(n) for n in torch.unique(lengths)]
        for n in distinct:
            memory_size = self.check_sizes(1, n, memory_size)[2]
        _check_generator(generator)
        shape = (lengths.numel(), memory_size)
        memory = torch.empty(shape, dtype=torch.long)
        target = torch.empty(shape, dtype=torch.long)
        mask = torch.empty(shape, dtype=torch.bool)
        for n in distinct:
            rows = (lengths == n).nonzero().squeeze(1)
            part = self._generate(rows.numel(), n, memory_size, generator)
            memory[rows], target[rows], mask[rows] = part
        return _to_device(TaskBatch(memory, target, mask), device)


def cell_accuracy(final_memory: Tensor, batch: TaskBatch) -> Tensor:
    """Fraction of scored cells that hold their target: ``[B, M]`` final memory -> ``FloatTensor[B]``."""
    correct = ((final_memory == batch.target) & batch.mask).sum(1)
    return correct.float() / batch.mask.sum(1).clamp_min(1).float()


def random_values(shape: tuple[int, ...], low: int, high: int, generator: torch.Generator | None) -> Tensor:
    """Integers drawn uniformly from ``low..high`` (both included): ``LongTensor[shape]``."""
    return torch.randint(low, high + 1, shape, generator=generator)


def random_permutations(batch_size: int, size: int, generator: torch.Generator | None) -> Tensor:
    """One uniformly random permutation of ``0..size-1`` per row: ``LongTensor[batch_size, size]``."""
    return torch.rand(batch_size, size, generator=generator).argsort(dim=1)


def _integer(value: object) -> int | None:
    """``value`` as an ``int`` if it is an integer (numpy and 0-d tensor integers too, not bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"tasks sample on the CPU: pass a CPU torch.Generator, got one on {generator.device}")


def _to_device(batch: TaskBatch, device: torch.device | str | None) -> TaskBatch:
    if device is None:
        return batch
    return TaskBatch(*(tensor.to(device) for tensor in batch))
