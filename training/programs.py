"""Hand-written programs for the shipped circuits, and the integer machine that runs them.

A program is what a trained controller amounts to once discretised: the controller sees only
which registers are zero, so a program is a list of rules ``(condition, choices)``. The first
rule whose condition (register name -> "is zero") holds picks, for this step, each gate's
inputs and each register's new source, by name; registers not named keep their value, gate
inputs not named read the first register. ``PROGRAMS`` has one for Swap and for each of
the five harder tasks. Each solves its task exactly with the shipped config's gates, R and T(n)
(``tests/test_programs.py``, at the training lengths and at 4x), so those configs are known to
be solvable, and :mod:`training.distil` can write one into a controller to see whether
training keeps it (``scripts/solution_stability.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nram.circuit import CircuitLayout
from nram.discrete import discrete_step, split_choices
from nram.gates import GATE_ARITY, GATE_NAMES
from tasks import get_task
from training.config import default_config_path, load_config

Rule = tuple[dict[str, bool], dict[str, str | tuple[str, ...]]]


@dataclass(frozen=True)
class Program:
    """Named registers and the rules that drive them (see the module docstring)."""

    registers: tuple[str, ...]
    rules: Sequence[Rule]

    def choice_table(self, layout: CircuitLayout) -> Tensor:
        """The option chosen in every slot for every pattern of zero flags: ``LongTensor[2^R, num_slots]``.

        Row ``pattern_index(is_zero)`` belongs to that pattern; slots are laid out as in
        :class:`nram.circuit.CircuitLayout` (gate inputs, then registers). Raises ``ValueError``
        when the program does not fit the circuit.
        """
        if len(self.registers) != layout.num_registers:
            raise ValueError(f"the program names {len(self.registers)} registers, the circuit has "
                             f"{layout.num_registers}")
        source = {name: j for j, name in enumerate(self.registers + layout.gates)}
        num_inputs = len(layout.input_slots)
        for condition, _ in self.rules:
            unknown = set(condition) - set(self.registers)
            if unknown:
                raise ValueError(f"a rule's condition names {sorted(unknown)[0]!r}, which is not a register")
        rows = []
        for flags in zero_patterns(layout.num_registers).bool().tolist():
            zero = dict(zip(self.registers, flags))
            row = [0] * num_inputs + list(range(layout.num_registers))
            picked = next((choices for condition, choices in self.rules
                           if all(zero[name] == wanted for name, wanted in condition.items())), {})
            for target, chosen in picked.items():
                chosen = (chosen,) if isinstance(chosen, str) else chosen
                unknown = [name for name in chosen if name not in source]
                if unknown:
                    raise ValueError(f"{target} takes {unknown[0]!r}, neither a register nor a gate of the circuit")
                if target in self.registers:
                    row[num_inputs + self.registers.index(target)] = source[chosen[0]]
                    continue
                if target not in layout.gates:
                    raise ValueError(f"the program uses the gate {target!r}, which the circuit lacks")
                gate = layout.gates.index(target)
                if len(chosen) != GATE_ARITY[target]:
                    raise ValueError(f"{target} takes {GATE_ARITY[target]} inputs, the program gives {len(chosen)}")
                for k, name in enumerate(chosen):
                    if source[name] >= layout.num_registers + gate:
                        raise ValueError(f"{target} cannot read {name}, which comes later in the circuit")
                    row[layout.first_slot[gate] + k] = source[name]
            rows.append(row)
        return torch.tensor(rows)

    def without_rule(self, index: int) -> Program:
        """This program with rule ``index`` (0-based) left out: a start one rule away from the
        solution, to see whether training finds the missing rule (``scripts/solution_stability.py``)."""
        if not 0 <= index < len(self.rules):
            raise ValueError(f"the program has rules 0..{len(self.rules) - 1}, not {index}")
        return Program(self.registers, [rule for position, rule in enumerate(self.rules) if position != index])


def zero_patterns(num_registers: int) -> Tensor:
    """Every pattern of zero flags, ``[2^R, R]`` (1.0 = that register is zero), in table row order."""
    bits = torch.arange(num_registers - 1, -1, -1)
    return ((torch.arange(2 ** num_registers)[:, None] >> bits) & 1).float()


def pattern_index(is_zero: Tensor) -> Tensor:
    """Zero flags ``BoolTensor[B, R]`` -> their row in :meth:`Program.choice_table`, ``[B]``."""
    bits = torch.arange(is_zero.shape[1] - 1, -1, -1, device=is_zero.device)
    return (is_zero.long() << bits).sum(dim=1)


def run_program(task_name: str, program: Program, length: int, steps: int | None = None,
                batch_size: int = 512) -> float:
    """Run ``program`` on the shipped circuit of ``task_name`` for ``steps`` (default: the config's
    T(length)) steps on a batch of that length, at the config's M(length); returns the per-cell error."""
    config = load_config(default_config_path(task_name))
    layout = CircuitLayout(config.num_registers, tuple(config.gates) or GATE_NAMES)
    table = program.choice_table(layout)
    batch = get_task(task_name).sample(batch_size, length, config.memory_size_for(length),
                                       torch.Generator().manual_seed(length))
    memory = batch.memory
    values = torch.zeros(batch_size, layout.num_registers, dtype=torch.long)
    for _ in range(config.timesteps_for(length) if steps is None else steps):
        gate_inputs, register_sources = split_choices(table[pattern_index(values == 0)], layout)
        memory, values, _ = discrete_step(memory, values, gate_inputs, register_sources, layout.gates)
    wrong = (memory != batch.target) & batch.mask
    return wrong.sum().item() / batch.mask.sum().item()


# Swap [p, q, A..]: p := mem[0] (x := 1 marks the next step), q := mem[x], x := A[p],
# y := A[q] while A[q] := x, then A[p] := y. READ comes first in the circuit, so its address
# must already be in a register. The WRITEs before the last two rewrite a cell with its own value.
SWAP = Program(("p", "q", "x", "y"), [
    ({"p": True}, {"read": "p", "p": "read", "x": "one", "write": ("p", "read")}),
    ({"q": True}, {"read": "x", "q": "read", "x": "zero", "write": ("x", "read")}),
    ({"x": True, "y": True}, {"read": "p", "x": "read", "write": ("p", "read")}),
    ({"y": True}, {"read": "q", "y": "read", "write": ("q", "x")}),
    ({}, {"read": "p", "write": ("p", "y")}),
])

# Permutation [a, P.., A..]: a := mem[0], i := 1; then two steps per element: s := a + P[i - 1]
# (READ before ADD in gate order, so the address is ready for the next step), then cell i := mem[s].
PERMUTATION = Program(("a", "i", "s", "phase"), [
    ({"a": True}, {"read": "a", "a": "read", "i": "one", "write": ("a", "read")}),
    ({"phase": True}, {"read": "i", "add": ("a", "read"), "s": "add", "phase": "one", "write": ("i", "read")}),
    ({}, {"read": "s", "write": ("i", "read"), "inc": "i", "i": "inc", "phase": "zero"}),
])

# ListK [head, k, 0, ...]: p := head (k := 1 to address cell 1 next), then k := mem[1], then k hops
# p := mem[p] while k counts down, then cell 2 := mem[p + 1]. WRITE(2, READ) fires every step;
# only its last value counts. The shipped circuit has a fifth register, which this program leaves at 0.
LISTK = Program(("p", "k", "started", "value_at", "spare"), [
    ({"p": True}, {"read": "p", "p": "read", "k": "one", "write": ("two", "read")}),
    ({"started": True}, {"read": "k", "k": "read", "inc": "p", "value_at": "inc", "started": "one",
                         "write": ("two", "read")}),
    ({"k": False}, {"read": "p", "p": "read", "inc": "read", "value_at": "inc", "dec": "k", "k": "dec",
                    "write": ("two", "read")}),
    ({}, {"read": "value_at", "write": ("two", "read")}),
])

# Merge [a, b, o, A.., G, B.., G, 0..]: three setup steps read a, b and o (each register first
# holds the cell to read it from; s marks the end of setup), then three steps per output:
# t := A[pa]; then y := B[pb], cell po := min(t, y), po += 1, t := [y < t]; then advance pb
# if t else pa. The guard G = M - 1 is larger than every value, so an exhausted array is never
# taken. Setup WRITEs rewrite the cell just read; loop WRITEs outside the middle step hit the
# next, not yet written output cell.
MERGE = Program(("pa", "pb", "po", "t", "ph", "s"), [
    ({"pa": True}, {"read": "pa", "pa": "read", "pb": "one", "po": "two", "write": ("pa", "read")}),
    ({"s": True, "t": True}, {"read": "pb", "pb": "read", "t": "one", "write": ("pb", "read")}),
    ({"s": True}, {"read": "po", "po": "read", "t": "zero", "s": "one", "write": ("po", "read")}),
    ({"t": True, "ph": True}, {"read": "pa", "t": "read", "write": ("po", "zero")}),
    ({"ph": True}, {"read": "pb", "lt": ("read", "t"), "min": ("t", "read"), "write": ("po", "min"),
                    "inc": "po", "po": "inc", "t": "lt", "ph": "one"}),
    ({"t": False}, {"read": "pb", "inc": "pb", "pb": "inc", "t": "zero", "ph": "zero", "write": ("po", "zero")}),
    ({}, {"read": "pa", "inc": "pa", "pa": "inc", "ph": "zero", "write": ("po", "zero")}),
])

# WalkBST [root, 0, d1..dk, 0, ...], nodes (value, left, right): p := root, i := 2; then two
# steps per level: d := mem[i], p := p + d (the child's slot), i += 1; then p := mem[p]. Once it
# reads d = 0 the path has ended and p is the last node. WRITE(1, READ) fires every step, so
# the last one writes that node's value. t marks the second step; the fifth register stays 0.
WALKBST = Program(("p", "i", "d", "t", "spare"), [
    ({"p": True}, {"read": "p", "p": "read", "i": "two", "write": ("one", "read")}),
    ({"t": True}, {"read": "i", "d": "read", "add": ("p", "read"), "p": "add", "inc": "i", "i": "inc",
                   "t": "one", "write": ("one", "read")}),
    ({"d": False}, {"read": "p", "p": "read", "t": "zero", "write": ("one", "read")}),
    ({}, {"read": "p", "write": ("one", "read")}),
])

# ListSearch [head, v, 0, ...]: v := mem[1] (after v := 1 to address it); then per node two
# steps: a := mem[a] + 1 (hop to the next node's value cell; from a = 0 the first hop lands on
# the head's), then m := mem[a] - v and a -= 1 (back to the node). m = 0 means found: hold.
# WRITE(2, a) fires every step, so cell 2 ends with the address of the first match. The fifth
# register stays 0.
LISTSEARCH = Program(("a", "v", "m", "t", "spare"), [
    ({"a": True, "v": True}, {"v": "one", "write": ("two", "a")}),
    ({"a": True, "m": True}, {"read": "v", "v": "read", "m": "one", "write": ("two", "a")}),
    ({"m": False, "t": True}, {"read": "a", "inc": "read", "a": "inc", "t": "one", "write": ("two", "a")}),
    ({"t": False}, {"read": "a", "sub": ("read", "v"), "m": "sub", "dec": "a", "a": "dec", "t": "zero",
                    "write": ("two", "a")}),
    ({}, {"write": ("two", "a")}),
])

PROGRAMS: dict[str, Program] = {"swap": SWAP, "permutation": PERMUTATION, "listk": LISTK,
                                "listsearch": LISTSEARCH, "merge": MERGE, "walkbst": WALKBST}
