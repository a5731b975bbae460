"""Linked-list tasks: ListK and ListSearch.

A list of n nodes is a networkx path graph ``0 -> 1 -> ... -> n-1`` (node j is the j-th
node in list order). In memory a node is two cells ``(next, value)``: ``next`` is the
address of its successor's first cell, 0 for the last node. Nodes live in the 2-cell slots
that start at addresses 3, 5, 7, ...; each example puts its nodes in a uniformly random
set of slots in uniformly random order, so the list is scattered (address order is not list
order). Every cell from 3 on that no node uses holds trash, uniform on ``1..M-1``, so the
machine cannot find the nodes by scanning memory. Values are uniform on ``1..M-1``.

The path graph is the same for every example of a length, so it is built once per length
and the random placement is done for the whole batch at once.

- listk:      ``[head, k, 0, ...]``, k in 0..n-1 -> cell 2 := value of node k. M >= 2n + 3.
- listsearch: ``[head, v, 0, ...]``, v the value of a random node -> cell 2 := address of the
  first node (in list order) whose value is v. M >= 2n + 3.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from tasks.base import Task, TaskBatch, random_permutations, random_values

FIRST_NODE_CELL = 3
"""Address of the first cell that may hold a node; cells 0..2 are head, query and output."""


@lru_cache(maxsize=None)
def list_structure(length: int) -> tuple[int, Tensor]:
    """The list shape of ``length`` nodes: ``(head node, successor [n])``, successor -1 = none.

    Taken from ``networkx.path_graph(length, create_using=nx.DiGraph)``.
    """
    import networkx as nx  # here, not at the top: its 0.2 s import would delay every `nram` command

    graph = nx.path_graph(length, create_using=nx.DiGraph)
    (head,) = [node for node, degree in graph.in_degree() if degree == 0]
    successor = torch.full((length,), -1, dtype=torch.long)
    for node, nxt in graph.edges():
        successor[node] = nxt
    return head, successor


def scattered_list(batch_size: int, length: int, memory_size: int,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Lay out one random linked list per example over trash.

    Returns ``(memory [B, M], addresses [B, n], values [B, n])``: ``addresses[b, j]`` is the
    first cell of node j (j-th in list order); cells 0..2 are 0 and for the caller to fill.
    """
    head, successor = list_structure(length)
    num_slots = (memory_size - FIRST_NODE_CELL) // 2
    slots = random_permutations(batch_size, num_slots, generator)[:, :length]
    addresses = FIRST_NODE_CELL + 2 * slots
    values = random_values((batch_size, length), 1, memory_size - 1, generator)
    memory = random_values((batch_size, memory_size), 1, memory_size - 1, generator)
    memory[:, :FIRST_NODE_CELL] = 0
    has_next = successor >= 0
    next_address = torch.where(has_next, addresses.index_select(1, successor.clamp_min(0)), 0)
    memory.scatter_(1, addresses, next_address)
    memory.scatter_(1, addresses + 1, values)
    memory[:, 0] = addresses[:, head]
    return memory, addresses, values


def _output_batch(memory: Tensor, answer: Tensor) -> TaskBatch:
    """Target = memory with cell 2 := ``answer`` ``[B]``; only cell 2 is scored."""
    target = memory.clone()
    target[:, 2] = answer
    mask = torch.zeros_like(memory, dtype=torch.bool)
    mask[:, 2] = True
    return TaskBatch(memory, target, mask)


class ListK(Task):
    """Value of the k-th node of a linked list: ``[head, k, 0, ...]`` -> cell 2 := value of node k."""

    name = "listk"
    title = "ListK"

    def _memory_needed(self, length: int) -> int:
        return 2 * length + FIRST_NODE_CELL

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        memory, _, values = scattered_list(batch_size, length, memory_size, generator)
        k = torch.randint(0, length, (batch_size,), generator=generator)
        memory[:, 1] = k
        return _output_batch(memory, values.gather(1, k[:, None]).squeeze(1))


class ListSearch(Task):
    """Find a value in a linked list: ``[head, v, 0, ...]`` -> cell 2 := address of the first node holding v."""

    name = "listsearch"
    title = "ListSearch"

    def _memory_needed(self, length: int) -> int:
        return 2 * length + FIRST_NODE_CELL

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        memory, addresses, values = scattered_list(batch_size, length, memory_size, generator)
        chosen = torch.randint(0, length, (batch_size, 1), generator=generator)
        wanted = values.gather(1, chosen)
        first = (values == wanted).long().argmax(dim=1, keepdim=True)  # first match in list order
        memory[:, 1] = wanted[:, 0]
        return _output_batch(memory, addresses.gather(1, first).squeeze(1))
