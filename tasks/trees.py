"""WalkBST: follow a path of left/right turns down a binary search tree.

Initial memory ``[root, 0, d1..dk, 0, ...]``: ``root`` is the address of the root node, cell
1 is the output, ``d1..dk`` the turns (1 = left, 2 = right) closed by a 0. A node is three
cells ``(value, left, right)`` holding its key and the addresses of its children (0 = none).
Nodes sit in 3-cell slots starting at ``k+3, k+6, ...``, a uniformly random set of slots in
uniformly random order; every other cell from ``k+3`` on holds trash, uniform on ``1..M-1``.
Desired change: cell 1 := the key of the node the path ends at. Only cell 1 is scored.

The tree is a random binary search tree: n distinct keys drawn uniformly from ``1..M-1``
and inserted in random order (a networkx ``DiGraph``, :func:`random_bst`). The path length
k is uniform on ``0..height`` and the path ends at a uniformly chosen node of depth k, so a
path always exists. Since k can reach n-1, M >= (n+2) + 3n = 4n + 2.

Speed: the tree's shape depends only on the order in which the keys' ranks are inserted,
so shapes are built once per rank order (:func:`bst_shape`, cached) and everything else —
choosing the path, placing nodes, writing memory — is done for the whole batch at once.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import torch

from tasks.base import Task, TaskBatch, random_values

if TYPE_CHECKING:
    import networkx as nx

LEFT, RIGHT = 1, 2
"""Codes of a left and a right turn in the path."""

SHAPE_CACHE_SIZE = 1 << 14
"""Shapes kept by :func:`bst_shape` (the 7! = 5040 insertion orders of 7 nodes all fit)."""


def random_bst(keys: Sequence[int]) -> nx.DiGraph:
    """The binary search tree made by inserting distinct ``keys`` in order (``keys[0]`` is the root).

    Nodes are the keys, with attribute ``depth`` (root 0); every edge parent -> child has
    attribute ``turn``: :data:`LEFT` if child < parent, else :data:`RIGHT`.
    """
    import networkx as nx  # here, not at the top: its 0.2 s import would delay every `nram` command

    child: dict[tuple[int, int], int] = {}
    depth = {keys[0]: 0}
    edges = []
    for key in keys[1:]:
        parent = keys[0]
        while (parent, turn := LEFT if key < parent else RIGHT) in child:
            parent = child[parent, turn]
        child[parent, turn] = key
        depth[key] = depth[parent] + 1
        edges.append((parent, key, {"turn": turn}))
    tree = nx.DiGraph()
    tree.add_nodes_from((key, {"depth": d}) for key, d in depth.items())
    tree.add_edges_from(edges)
    return tree


@lru_cache(maxsize=SHAPE_CACHE_SIZE)
def bst_shape(ranks: tuple[int, ...]) -> torch.Tensor:
    """The shape of ``random_bst(ranks)``: ``LongTensor[n, 5]``, one row per inserted element.

    Row j (in insertion order) is ``(left child, right child, parent, turn from the parent,
    depth)``, where children and parent are insertion indices (-1 = none) and the root's
    turn is 0. Callers must not modify the (cached) tensor.
    """
    tree = random_bst(ranks)
    index = {rank: j for j, rank in enumerate(ranks)}
    shape = []
    for rank in ranks:
        children = [-1, -1]
        for node, turn in tree.succ[rank].items():
            children[turn["turn"] - 1] = index[node]
        ((parent, edge),) = tree.pred[rank].items() or [(None, {"turn": 0})]
        shape.append((*children, -1 if parent is None else index[parent], edge["turn"], tree.nodes[rank]["depth"]))
    return torch.tensor(shape, dtype=torch.long)


class WalkBST(Task):
    """Walk down a binary search tree: ``[root, 0, d1..dk, 0, ...]`` -> cell 1 := key at the path's end."""

    name = "walkbst"
    title = "WalkBST"

    def _memory_needed(self, length: int) -> int:
        return 4 * length + 2

    def _generate(self, batch_size: int, length: int, memory_size: int,
                  generator: torch.Generator | None) -> TaskBatch:
        keys = torch.rand(batch_size, memory_size - 1, generator=generator).argsort(dim=1)[:, :length] + 1
        choice = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64)
        slot_keys = torch.rand(batch_size, (memory_size - 3) // 3, generator=generator)
        memory = random_values((batch_size, memory_size), 1, memory_size - 1, generator)

        ranks = keys.argsort(dim=1).argsort(dim=1)
        shapes = torch.stack([bst_shape(tuple(row)) for row in ranks.tolist()])  # [B, n, 5]
        left, right, parent, turn, depth = shapes.permute(2, 0, 1).contiguous()  # each [B, n]

        # Path length k uniform on 0..height; its end a uniform node of depth k.
        path_length = (choice[:, 0] * (depth.amax(dim=1) + 1)).long()
        at_depth = depth == path_length[:, None]
        pick = (choice[:, 1] * at_depth.sum(dim=1)).long()
        end = (at_depth & (at_depth.cumsum(dim=1) == pick[:, None] + 1)).long().argmax(dim=1)
        # Climb from the end to the root, writing each turn at its depth (0-padded: 0 closes the path).
        turns = torch.zeros(batch_size, length, dtype=torch.long)
        node, rows = end, torch.arange(batch_size)
        for _ in range(length - 1):
            node_depth = depth[rows, node]
            below_root = node_depth > 0
            turns[rows[below_root], node_depth[below_root] - 1] = turn[rows, node][below_root]
            node = torch.where(below_root, parent[rows, node], node)

        # Slots that fit after the path get their random key; the rest sort last.
        first_cell = path_length + 3
        num_slots = (memory_size - first_cell) // 3
        too_far = torch.arange(slot_keys.shape[1])[None, :] >= num_slots[:, None]
        slots = (slot_keys + too_far.float()).argsort(dim=1)[:, :length]
        addresses = first_cell[:, None] + 3 * slots  # [B, n], node j = j-th inserted key
        memory.scatter_(1, addresses, keys)
        for offset, child in ((1, left), (2, right)):
            memory.scatter_(1, addresses + offset, torch.where(child >= 0, addresses.gather(1, child.clamp_min(0)), 0))
        memory[:, 0] = addresses[:, 0]
        memory[:, 1] = 0
        path_cells = torch.arange(length)[None, :] <= path_length[:, None]  # the turns and their closing 0
        memory[:, 2:length + 2] = torch.where(path_cells, turns, memory[:, 2:length + 2])

        target = memory.clone()
        target[:, 1] = keys[rows, end]
        mask = torch.zeros_like(memory, dtype=torch.bool)
        mask[:, 1] = True
        return TaskBatch(memory, target, mask)
