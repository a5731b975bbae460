"""Merge patterns of zero flags into few conditions, as a hand-written program states them.

A pattern of R zero flags is an integer whose bit ``R - 1 - r`` says whether register r is zero
(the row order of :func:`training.programs.zero_patterns`). A condition fixes some flags and
leaves the rest free: the set of patterns it matches is a cube. :func:`cover` finds a few cubes
that together match every wanted pattern and nothing outside the allowed ones, so patterns
that are never reached, or that an earlier rule already takes, can widen a condition.
"""

from __future__ import annotations

import itertools

Condition = dict[int, bool]
"""Register index -> whether it must be zero; registers not named are free."""


def matches(condition: Condition, pattern: int, num_registers: int) -> bool:
    """Whether ``pattern`` satisfies every flag ``condition`` fixes."""
    return all(bool(pattern >> (num_registers - 1 - r) & 1) == zero for r, zero in condition.items())


def cube(condition: Condition, num_registers: int) -> frozenset[int]:
    """Every pattern ``condition`` matches."""
    return frozenset(p for p in range(2 ** num_registers) if matches(condition, p, num_registers))


def cover(wanted: set[int], allowed: set[int], num_registers: int) -> list[Condition]:
    """Conditions whose cubes together hold every pattern in ``wanted`` and none outside
    ``allowed`` (which must contain ``wanted``).

    Greedy: each pick matches the most wanted patterns still uncovered, then fixes the fewest
    flags, then comes first in a fixed order, so the result is deterministic. 3^R candidates,
    which is small for the machine's few registers.
    """
    if not wanted <= allowed:
        raise ValueError("every wanted pattern must be allowed")
    candidates = []
    for flags in itertools.product((None, True, False), repeat=num_registers):
        condition = {r: zero for r, zero in enumerate(flags) if zero is not None}
        patterns = cube(condition, num_registers)
        if patterns <= allowed and patterns & wanted:
            candidates.append((condition, patterns))
    uncovered, chosen = set(wanted), []
    while uncovered:
        condition, patterns = max(candidates, key=lambda c: (len(c[1] & uncovered), -len(c[0])))
        chosen.append(condition)
        uncovered -= patterns
    return chosen
