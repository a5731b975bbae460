"""Array tasks: Access, Increment, Copy, Reverse, Swap, Permutation and Merge.

Every task is sampled for the whole batch at once (no Python loop over examples). Array
values are drawn uniformly from ``1..M-1`` so that 0 stays NULL; cells not named in a
layout are 0. Layouts (n = length, M = memory size):

==============  =================================================  ==============================
task            initial memory                                     desired change (scored cells)
==============  =================================================  ==============================
access          ``[k, A0..An-1, 0]``, k in 0..n-1                   cell 0 := A[k]
increment       ``[A0..An-1, 0]``                                  A[i] := (A[i] + 1) mod M
copy            ``[p, A0..An-1, 0..]``, p = n+1                    cells p..p+n-1 := A
reverse         as copy                                            cells p..p+n-1 := reversed A
swap            ``[p, q, A0..An-1, 0]``, 2 <= p < q <= n+1         swap cells p, q (cells 2..n+1)
permutation     ``[a, P0..Pn-1, A0..An-1, 0]``, a = n+1            cell 1+i := A[P[i]] (cells 1..n)
merge           ``[a, b, o, A.., G, B.., G, 0..]``, G = M-1        cells o..o+n-1 := merged A, B
==============  =================================================  ==============================
"""

from __future__ import annotations

import torch
from torch import Tensor

from tasks.base import Task, TaskBatch, random_permutations, random_values


def _batch(memory: Tensor, target: Tensor, scored: slice) -> TaskBatch:
    """A :class:`TaskBatch` whose mask is the column range ``scored`` of every row."""
    mask = torch.zeros_like(memory, dtype=torch.bool)
    mask[:, scored] = True
    return TaskBatch(memory, target, mask)


class Access(Task):
    """Read the value at index k: ``[k, A0..An-1, 0]`` -> cell 0 := A[k]. M >= n + 2."""

    name = "access"
    title = "Access"

    def _memory_needed(self, length: int) -> int:
        return length + 2

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        values = random_values((batch_size, length), 1, memory_size - 1, generator)
        index = torch.randint(0, length, (batch_size,), generator=generator)
        memory = torch.zeros(batch_size, memory_size, dtype=torch.long)
        memory[:, 0] = index
        memory[:, 1:length + 1] = values
        target = memory.clone()
        target[:, 0] = values.gather(1, index[:, None]).squeeze(1)
        return _batch(memory, target, slice(0, 1))


class Increment(Task):
    """Add one to every element: ``[A0..An-1, 0]`` -> A[i] := (A[i] + 1) mod M. M >= n + 1."""

    name = "increment"
    title = "Increment"

    def _memory_needed(self, length: int) -> int:
        return length + 1

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        values = random_values((batch_size, length), 1, memory_size - 1, generator)
        memory = torch.zeros(batch_size, memory_size, dtype=torch.long)
        memory[:, :length] = values
        target = memory.clone()
        target[:, :length] = (values + 1) % memory_size
        return _batch(memory, target, slice(0, length))


class Copy(Task):
    """Copy A behind itself: ``[p, A0..An-1, 0..]``, p = n+1 -> cells p..p+n-1 := A. M >= 2n + 1."""

    name = "copy"
    title = "Copy"
    reverse = False
    """Whether the copy is written in reverse order (see :class:`Reverse`)."""

    def _memory_needed(self, length: int) -> int:
        return 2 * length + 1

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        values = random_values((batch_size, length), 1, memory_size - 1, generator)
        start = length + 1
        memory = torch.zeros(batch_size, memory_size, dtype=torch.long)
        memory[:, 0] = start
        memory[:, 1:length + 1] = values
        target = memory.clone()
        target[:, start:start + length] = values.flip(1) if self.reverse else values
        return _batch(memory, target, slice(start, start + length))


class Reverse(Copy):
    """Copy A reversed: ``[p, A0..An-1, 0..]``, p = n+1 -> cell p+i := A[n-1-i]. M >= 2n + 1."""

    name = "reverse"
    title = "Reverse"
    reverse = True


class Swap(Task):
    """Swap two elements: ``[p, q, A0..An-1, 0]``, 2 <= p < q <= n+1 -> swap cells p and q. M >= n + 3."""

    name = "swap"
    title = "Swap"
    min_length = 2

    def _memory_needed(self, length: int) -> int:
        return length + 3

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        values = random_values((batch_size, length), 1, memory_size - 1, generator)
        first = torch.randint(0, length, (batch_size,), generator=generator)
        second = torch.randint(0, length - 1, (batch_size,), generator=generator)
        second = second + (second >= first).long()  # uniform over the other n-1 indices
        pair = torch.stack([torch.minimum(first, second), torch.maximum(first, second)], dim=1) + 2
        memory = torch.zeros(batch_size, memory_size, dtype=torch.long)
        memory[:, :2] = pair
        memory[:, 2:length + 2] = values
        target = memory.clone()
        target.scatter_(1, pair, memory.gather(1, pair.flip(1)))
        return _batch(memory, target, slice(2, length + 2))


class Permutation(Task):
    """Apply a permutation: ``[a, P0..Pn-1, A0..An-1, 0]``, a = n+1 -> cell 1+i := A[P[i]]. M >= 2n + 2."""

    name = "permutation"
    title = "Permutation"

    def _memory_needed(self, length: int) -> int:
        return 2 * length + 2

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        values = random_values((batch_size, length), 1, memory_size - 1, generator)
        permutation = random_permutations(batch_size, length, generator)
        memory = torch.zeros(batch_size, memory_size, dtype=torch.long)
        memory[:, 0] = length + 1
        memory[:, 1:length + 1] = permutation
        memory[:, length + 1:2 * length + 1] = values
        target = memory.clone()
        target[:, 1:length + 1] = values.gather(1, permutation)
        return _batch(memory, target, slice(1, length + 1))


class Merge(Task):
    """Merge two sorted arrays: ``[a, b, o, A.., G, B.., G, 0..]`` -> cells o..o+n-1 := sorted(A + B).

    ``len(A)`` is uniform on ``0..n`` and ``len(B) = n - len(A)``; values are uniform on
    ``1..M-2`` (duplicates allowed), each array sorted ascending and closed by the guard
    ``G = M-1``. ``a = 3``, ``b = 4 + len(A)``, ``o = n + 5``. M >= 2n + 5.
    """

    name = "merge"
    title = "Merge"

    def _memory_needed(self, length: int) -> int:
        return 2 * length + 5

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        values = random_values((batch_size, length), 1, memory_size - 2, generator)
        size_a = torch.randint(0, length + 1, (batch_size, 1), generator=generator)
        in_b = torch.arange(length)[None, :] >= size_a  # [B, n]: element j belongs to B
        # Sorting value + M * in_b puts A's values in order, then B's values in order.
        arrays = (values + memory_size * in_b).sort(dim=1).values - memory_size * in_b
        guard = memory_size - 1
        output = length + 5
        memory = torch.zeros(batch_size, memory_size, dtype=torch.long)
        memory[:, 0] = 3
        memory[:, 1] = 4 + size_a[:, 0]
        memory[:, 2] = output
        memory.scatter_(1, 3 + torch.arange(length)[None, :] + in_b.long(), arrays)
        memory.scatter_(1, 3 + size_a, guard)
        memory[:, length + 4] = guard
        target = memory.clone()
        target[:, output:output + length] = values.sort(dim=1).values
        return _batch(memory, target, slice(output, output + length))
