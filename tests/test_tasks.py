"""Tasks: every target recomputed from the initial memory alone, by the task's definition.

The reference solvers below read one example's initial memory as a plain list, check that
it has the layout of DESIGN.md section 2, and return the desired final memory and the set of
scored cells. They never call the generators' helpers.
"""

from __future__ import annotations

import pytest
import torch

from tasks import TASK_NAMES, TaskBatch, cell_accuracy, get_task

# ---------------------------------------------------------------- reference solvers


def _is_value(x: int, m: int) -> bool:
    return 1 <= x <= m - 1


def _zeros_from(mem: list[int], start: int) -> None:
    assert all(c == 0 for c in mem[start:]), "cells after the layout must be 0"


def ref_access(mem, n, m):
    k, values = mem[0], mem[1:n + 1]
    assert 0 <= k < n and all(_is_value(v, m) for v in values)
    _zeros_from(mem, n + 1)
    out = list(mem)
    out[0] = values[k]
    return out, {0}


def ref_increment(mem, n, m):
    assert all(_is_value(v, m) for v in mem[:n])
    _zeros_from(mem, n)
    return [(v + 1) % m for v in mem[:n]] + mem[n:], set(range(n))


def _ref_copy(mem, n, m, reverse):
    p, values = mem[0], mem[1:n + 1]
    assert p == n + 1 and all(_is_value(v, m) for v in values)
    _zeros_from(mem, n + 1)
    out = list(mem)
    out[p:p + n] = values[::-1] if reverse else values
    return out, set(range(p, p + n))


def ref_copy(mem, n, m):
    return _ref_copy(mem, n, m, reverse=False)


def ref_reverse(mem, n, m):
    return _ref_copy(mem, n, m, reverse=True)


def ref_swap(mem, n, m):
    p, q = mem[0], mem[1]
    assert 2 <= p < q <= n + 1 and all(_is_value(v, m) for v in mem[2:n + 2])
    _zeros_from(mem, n + 2)
    out = list(mem)
    out[p], out[q] = mem[q], mem[p]
    return out, set(range(2, n + 2))


def ref_permutation(mem, n, m):
    a, perm = mem[0], mem[1:n + 1]
    assert a == n + 1 and sorted(perm) == list(range(n))
    assert all(_is_value(v, m) for v in mem[a:a + n])
    _zeros_from(mem, 2 * n + 1)
    out = list(mem)
    for i in range(n):
        out[1 + i] = mem[a + perm[i]]
    return out, set(range(1, n + 1))


def ref_merge(mem, n, m):
    guard = m - 1

    def read_until_guard(address):
        values = []
        while mem[address] != guard:
            values.append(mem[address])
            address += 1
        return values, address

    a, b, o = mem[0], mem[1], mem[2]
    first, end_a = read_until_guard(a)
    second, end_b = read_until_guard(b)
    assert a == 3 and b == end_a + 1 and o == end_b + 1 == n + 5
    assert len(first) + len(second) == n
    for array in (first, second):
        assert array == sorted(array) and all(1 <= v <= m - 2 for v in array)
    _zeros_from(mem, o)
    out = list(mem)
    out[o:o + n] = sorted(first + second)
    return out, set(range(o, o + n))


def walk_list(mem, n):
    """Follow next pointers from the head: the node addresses in list order (checked to be a valid list)."""
    nodes, address = [], mem[0]
    while address != 0:
        assert address >= 3 and address + 1 < len(mem) and address not in nodes
        nodes.append(address)
        address = mem[address]
    assert len(nodes) == n
    cells = sorted(c for a in nodes for c in (a, a + 1))
    assert len(set(cells)) == 2 * n, "nodes overlap"
    return nodes


def _check_trash(mem, used, start, m):
    for cell in range(start, len(mem)):
        if cell not in used:
            assert _is_value(mem[cell], m), "unused cells hold trash in 1..M-1"


def ref_listk(mem, n, m):
    k = mem[1]
    assert 0 <= k < n and mem[2] == 0
    address = mem[0]
    for _ in range(k):
        address = mem[address]
    nodes = walk_list(mem, n)
    _check_trash(mem, {c for a in nodes for c in (a, a + 1)}, 3, m)
    assert all(_is_value(mem[a + 1], m) for a in nodes)
    out = list(mem)
    out[2] = mem[address + 1]
    return out, {2}


def ref_listsearch(mem, n, m):
    wanted = mem[1]
    assert mem[2] == 0
    nodes = walk_list(mem, n)
    _check_trash(mem, {c for a in nodes for c in (a, a + 1)}, 3, m)
    out = list(mem)
    out[2] = next(a for a in nodes if mem[a + 1] == wanted)
    return out, {2}


def ref_walkbst(mem, n, m):
    turns = []
    while mem[2 + len(turns)] != 0:
        turns.append(mem[2 + len(turns)])
    k = len(turns)
    assert mem[1] == 0 and all(t in (1, 2) for t in turns)
    node = mem[0]
    for turn in turns:  # (value, left, right): turn 1 reads the left pointer, 2 the right one
        node = mem[node + turn]
        assert node != 0, "the path leads to an existing node"
    # The whole tree: n nodes at addresses >= k+3, non-overlapping, keys in search-tree order.
    seen, keys = set(), []

    def in_order(address, low, high):
        assert address >= k + 3 and address + 2 < len(mem) and address not in seen
        seen.add(address)
        key, left, right = mem[address:address + 3]
        assert low < key < high and _is_value(key, m)
        if left:
            in_order(left, low, key)
        keys.append(key)
        if right:
            in_order(right, key, high)

    in_order(mem[0], 0, m)
    used = {c for a in seen for c in (a, a + 1, a + 2)}
    assert len(seen) == n and len(used) == 3 * n
    _check_trash(mem, used, k + 3, m)
    out = list(mem)
    out[1] = mem[node]
    return out, {1}


REFERENCE = {"access": ref_access, "increment": ref_increment, "copy": ref_copy, "reverse": ref_reverse,
             "swap": ref_swap, "permutation": ref_permutation, "listk": ref_listk,
             "listsearch": ref_listsearch, "merge": ref_merge, "walkbst": ref_walkbst}

MIN_MEMORY = {"access": lambda n: n + 2, "increment": lambda n: n + 1, "copy": lambda n: 2 * n + 1,
              "reverse": lambda n: 2 * n + 1, "swap": lambda n: n + 3, "permutation": lambda n: 2 * n + 2,
              "listk": lambda n: 2 * n + 3, "listsearch": lambda n: 2 * n + 3, "merge": lambda n: 2 * n + 5,
              "walkbst": lambda n: 4 * n + 2}
MIN_LENGTH = {name: 2 if name == "swap" else 1 for name in TASK_NAMES}


def check_batch(name: str, batch: TaskBatch, lengths: list[int], memory_size: int) -> None:
    """Every example's target and mask equal the reference's; shapes and dtypes are right."""
    size = (len(lengths), memory_size)
    assert batch.memory.shape == batch.target.shape == batch.mask.shape == size
    assert batch.memory.dtype == batch.target.dtype == torch.long and batch.mask.dtype == torch.bool
    assert batch.memory.min() >= 0 and batch.memory.max() < memory_size
    for mem, target, mask, n in zip(batch.memory.tolist(), batch.target.tolist(), batch.mask.tolist(), lengths):
        expected, scored = REFERENCE[name](mem, n, memory_size)
        assert {i for i, s in enumerate(mask) if s} == scored
        assert target == expected  # so target == memory outside the scored cells


# ---------------------------------------------------------------- tests


def test_task_names_and_lookup():
    assert TASK_NAMES == ("access", "increment", "copy", "reverse", "swap", "permutation",
                          "listk", "listsearch", "merge", "walkbst")
    for name in TASK_NAMES:
        assert get_task(name).name == name
    assert get_task("ListK").name == "listk"
    with pytest.raises(ValueError, match="valid tasks are access"):
        get_task("sort")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_targets_match_reference(name):
    task = get_task(name)
    for n in range(MIN_LENGTH[name], 7):
        for extra in (0, 5):
            memory_size = MIN_MEMORY[name](n) + extra
            for seed in range(4):
                batch = task.sample(32, n, memory_size, torch.Generator().manual_seed(seed))
                check_batch(name, batch, [n] * 32, memory_size)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_memory_size_and_length_validation(name):
    task = get_task(name)
    for n in range(MIN_LENGTH[name], 12):
        assert task.min_memory_size(n) == MIN_MEMORY[name](n)
    assert task.max_length(32) == max(n for n in range(MIN_LENGTH[name], 40) if MIN_MEMORY[name](n) <= 32)
    n = MIN_LENGTH[name] + 2
    with pytest.raises(ValueError, match=f"needs memory_size >= {MIN_MEMORY[name](n)}"):
        task.sample(2, n, MIN_MEMORY[name](n) - 1)
    with pytest.raises(ValueError, match=f"length must be an integer >= {MIN_LENGTH[name]}"):
        task.sample(2, MIN_LENGTH[name] - 1, 64)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(0, n, 64)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_seed_same_batch_and_device(name):
    task = get_task(name)
    n = MIN_LENGTH[name] + 3
    first = task.sample(16, n, 40, torch.Generator().manual_seed(7))
    again = task.sample(16, n, 40, torch.Generator().manual_seed(7), device="cpu")
    other = task.sample(16, n, 40, torch.Generator().manual_seed(8))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.equal(first.memory, other.memory)
    moved = task.sample(2, n, 40, torch.Generator(), device="meta")
    assert all(t.device.type == "meta" for t in moved)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_sample_mixed_lengths_share_memory_size(name):
    task = get_task(name)
    low = MIN_LENGTH[name]
    lengths = [low + 2, low, low + 2, low + 1, low]
    memory_size = MIN_MEMORY[name](low + 2) + 1
    batch = task.sample_mixed(torch.tensor(lengths), memory_size, torch.Generator().manual_seed(3))
    check_batch(name, batch, lengths, memory_size)
    again = task.sample_mixed(lengths, memory_size, torch.Generator().manual_seed(3))
    assert torch.equal(batch.memory, again.memory)
    with pytest.raises(ValueError, match="needs memory_size"):
        task.sample_mixed(lengths, memory_size - 2)
    single = task.sample_mixed([low + 1] * 4, memory_size, torch.Generator().manual_seed(4))
    plain = task.sample(4, low + 1, memory_size, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(single, plain))


def test_array_values_cover_one_to_m_minus_one():
    batch = get_task("increment").sample(512, 8, 9, torch.Generator().manual_seed(0))
    values = batch.memory[:, :8]
    assert values.min() == 1 and values.max() == 8
    assert (batch.target[:, :8] == 0).any(), "M-1 increments to 0 (mod M)"


def test_random_choices_cover_their_ranges():
    g = torch.Generator().manual_seed(0)
    access = get_task("access").sample(400, 5, 8, g)
    assert set(access.memory[:, 0].tolist()) == set(range(5))
    swap = get_task("swap").sample(800, 4, 7, g)
    assert set(map(tuple, swap.memory[:, :2].tolist())) == {(p, q) for p in range(2, 6) for q in range(p + 1, 6)}
    merge = get_task("merge").sample(400, 4, 13, g)
    assert set(merge.memory[:, 1].tolist()) == {4 + size_a for size_a in range(5)}
    listk = get_task("listk").sample(400, 5, 13, g)
    assert set(listk.memory[:, 1].tolist()) == set(range(5))
    walk = get_task("walkbst").sample(400, 5, 22, g)
    path_lengths = (walk.memory[:, 2:8] != 0).int().cumprod(1).sum(1)
    assert set(path_lengths.tolist()) >= {0, 1, 2, 3}


@pytest.mark.parametrize("name", ["listk", "listsearch"])
def test_lists_are_scattered(name):
    batch = get_task(name).sample(500, 8, 32, torch.Generator().manual_seed(1))
    in_address_order = contiguous = 0
    heads = set()
    for mem in batch.memory.tolist():
        nodes = walk_list(mem, 8)
        heads.add(nodes[0])
        in_address_order += nodes == sorted(nodes)
        contiguous += all(b - a == 2 for a, b in zip(nodes, nodes[1:]))
    assert in_address_order == 0 and contiguous == 0  # each has probability about 1/8! per example
    assert len(heads) >= 10


def test_trash_is_uniform_junk():
    batch = get_task("listk").sample(200, 3, 32, torch.Generator().manual_seed(2))
    junk = []
    for mem in batch.memory.tolist():
        used = {c for a in walk_list(mem, 3) for c in (a, a + 1)}
        junk += [mem[c] for c in range(3, 32) if c not in used]
    assert set(junk) == set(range(1, 32))


def test_cell_accuracy():
    batch = get_task("copy").sample(3, 4, 9, torch.Generator().manual_seed(0))
    assert torch.equal(cell_accuracy(batch.target, batch), torch.ones(3))
    assert torch.equal(cell_accuracy(batch.memory, batch), torch.zeros(3))  # copy cells start at 0
    half = batch.target.clone()
    half[:, 5:7] = 0
    assert torch.allclose(cell_accuracy(half, batch), torch.full((3,), 0.5))
