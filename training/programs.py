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
from nram.model import NRAM
from tasks import get_task
from training.config import default_config_path, load_config
from training.rule_merging import cover

Condition = dict[str, bool]
"""Register name -> whether it must be zero; registers not named are free."""
Rule = tuple[Condition, dict[str, str | tuple[str, ...]]]


@dataclass(frozen=True)
class Program:
    """Named registers and the rules that drive them (see the module docstring).

    After a step whose flags match one of ``stops`` the machine stops (the hand programs run
    all T steps and have none). ``unreached`` describes, for a program read off a controller,
    the patterns of flags the task's inputs never showed it (:meth:`from_controller`); they
    are documentation and change nothing.
    """

    registers: tuple[str, ...]
    rules: Sequence[Rule]
    stops: Sequence[Condition] = ()
    unreached: Sequence[Condition] = ()

    def choice_table(self, layout: CircuitLayout) -> Tensor:
        """The option chosen in every slot for every pattern of zero flags: ``LongTensor[2^R, num_slots]``.

        Row ``pattern_index(is_zero)`` belongs to that pattern; slots are laid out as in
        :class:`nram.circuit.CircuitLayout` (gate inputs, then registers). Raises ``ValueError``
        when the program does not fit the circuit.
        """
        if len(self.registers) != layout.num_registers:
            raise ValueError(f"the program names {len(self.registers)} registers, the circuit has "
                             f"{layout.num_registers}")
        for condition in [condition for condition, _ in self.rules] + list(self.stops):
            unknown = set(condition) - set(self.registers)
            if unknown:
                raise ValueError(f"a condition names {sorted(unknown)[0]!r}, which is not a register")
        rows = [self.rule_row(self.first_rule(flags), layout) for flags in self._flag_dicts()]
        return torch.tensor(rows)

    def stop_table(self) -> Tensor:
        """Whether the machine stops after a step with each pattern of flags: ``BoolTensor[2^R]``."""
        return torch.tensor([any(_holds(condition, flags) for condition in self.stops)
                             for flags in self._flag_dicts()], dtype=torch.bool)

    def first_rule(self, flags: Condition) -> dict[str, str | tuple[str, ...]]:
        """The choices of the first rule whose condition ``flags`` (every register named) meet; ``{}`` if none."""
        return next((choices for condition, choices in self.rules if _holds(condition, flags)), {})

    def rule_row(self, choices: dict[str, str | tuple[str, ...]], layout: CircuitLayout) -> list[int]:
        """One rule's choices as a row of :meth:`choice_table`: unnamed gate inputs read the first
        register, unnamed registers keep their value."""
        source = {name: j for j, name in enumerate(self.registers + layout.gates)}
        num_inputs = len(layout.input_slots)
        row = [0] * num_inputs + list(range(layout.num_registers))
        for target, chosen in choices.items():
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
        return row

    def _flag_dicts(self) -> list[Condition]:
        """Every pattern of flags as register name -> is zero, in table row order."""
        return [dict(zip(self.registers, flags)) for flags in zero_patterns(len(self.registers)).bool().tolist()]

    def without_rule(self, index: int) -> Program:
        """This program with rule ``index`` (0-based) left out: a start one rule away from the
        solution, to see whether training finds the missing rule (``scripts/solution_stability.py``)."""
        if not 0 <= index < len(self.rules):
            raise ValueError(f"the program has rules 0..{len(self.rules) - 1}, not {index}")
        return Program(self.registers, [rule for position, rule in enumerate(self.rules) if position != index],
                       self.stops)

    @classmethod
    def from_controller(cls, model: NRAM, first_seen: Tensor | None = None,
                        registers: Sequence[str] | None = None) -> Program:
        """The program a feed-forward controller computes once discretised: the inverse of
        :func:`training.distil.distil_program`.

        ``first_seen`` ``LongTensor[2^R]`` is the first step at which the task's inputs showed
        each pattern of flags, -1 for never (:func:`training.program_machine.reached_patterns`);
        without it every pattern counts as reached. Patterns that choose alike (ignoring the
        inputs of gates whose output nothing uses) share rules, whose conditions are widened
        over unreached patterns and those an earlier rule takes; rules come in the order the
        run first needs them. The program chooses as the controller on every reached pattern.
        Registers are named ``r0, r1, ...`` unless ``registers`` names them. Raises
        ``ValueError`` for a controller with state of its own (an LSTM).
        """
        layout = model.layout
        names = tuple(registers) if registers is not None else tuple(f"r{r}" for r in range(layout.num_registers))
        if len(names) != layout.num_registers:
            raise ValueError(f"{len(names)} register names for {layout.num_registers} registers")
        table, stops = controller_table(model)
        table = live_choices(table, layout).tolist()
        num_patterns = len(table)
        first_seen = torch.zeros(num_patterns, dtype=torch.long) if first_seen is None else first_seen.cpu()
        reached = [p for p in range(num_patterns) if first_seen[p] >= 0]
        unreached = set(range(num_patterns)) - set(reached)
        groups: dict[tuple[int, ...], list[int]] = {}
        for pattern in sorted(reached, key=lambda p: (int(first_seen[p]), p)):
            groups.setdefault(tuple(table[pattern]), []).append(pattern)
        rules, taken = [], set()
        for row, patterns in groups.items():
            for condition in cover(set(patterns), set(patterns) | unreached | taken, layout.num_registers):
                rules.append((_named(condition, names), _choices(row, names, layout)))
            taken |= set(patterns)
        stopping = {p for p in reached if stops[p]}
        return cls(names, rules,
                   stops=[_named(c, names) for c in cover(stopping, stopping | unreached, layout.num_registers)],
                   unreached=[_named(c, names) for c in cover(unreached, unreached, layout.num_registers)])


def _holds(condition: Condition, flags: Condition) -> bool:
    return all(flags[name] == wanted for name, wanted in condition.items())


def _named(condition: dict[int, bool], names: tuple[str, ...]) -> Condition:
    return {names[r]: zero for r, zero in sorted(condition.items())}


def _choices(row: tuple[int, ...], names: tuple[str, ...], layout: CircuitLayout) -> dict[str, str | tuple[str, ...]]:
    """A table row as a rule's choices, leaving out what a rule need not name (see :meth:`Program.rule_row`)."""
    sources = names + layout.gates
    choices: dict[str, str | tuple[str, ...]] = {}
    for gate, name in enumerate(layout.gates):
        inputs = row[layout.first_slot[gate]:layout.first_slot[gate] + GATE_ARITY[name]]
        if any(inputs):
            choices[name] = sources[inputs[0]] if len(inputs) == 1 else tuple(sources[j] for j in inputs)
    num_inputs = len(layout.input_slots)
    for r, name in enumerate(names):
        if row[num_inputs + r] != r:
            choices[name] = sources[row[num_inputs + r]]
    return choices


def controller_table(model: NRAM) -> tuple[Tensor, Tensor]:
    """What a feed-forward controller chooses, discretised, on every pattern of zero flags:
    ``(LongTensor[2^R, num_slots], stops BoolTensor[2^R])``, rows in :func:`zero_patterns` order.

    The discrete machine (:mod:`nram.discrete`) takes the same argmax and stops where the stop
    logit is positive. Raises ``ValueError`` for a controller with state of its own.
    """
    layout = model.layout
    parameter = next(model.parameters())
    if model.controller.initial_state(1, parameter.device) is not None:
        raise ValueError(f"the {model.config.controller} controller carries state from step to step, so its "
                         f"choices are not a table of the register flags; only feed-forward controllers (mlp, "
                         f"gated, table) read off as programs (nram run shows a discrete trace of any controller)")
    flags = zero_patterns(layout.num_registers).to(parameter.device, parameter.dtype)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        choices, stop_logit, _ = model.step_logits(flags, None, model.readout())
    model.train(was_training)
    return choices.argmax(-1).cpu(), (stop_logit > 0).cpu()


def live_gates(row: Sequence[int], layout: CircuitLayout) -> list[bool]:
    """Which gates a table row ``[num_slots]`` needs: every WRITE, and every gate whose output a
    register or a needed gate reads. The others are dead: their inputs change nothing."""
    num_inputs = len(layout.input_slots)
    read = set(row[num_inputs:])
    live = [False] * layout.num_gates
    for gate in reversed(range(layout.num_gates)):
        live[gate] = layout.gates[gate] == "write" or layout.num_registers + gate in read
        if live[gate]:
            first = layout.first_slot[gate]
            read.update(row[first:first + GATE_ARITY[layout.gates[gate]]])
    return live


def live_choices(table: Tensor, layout: CircuitLayout) -> Tensor:
    """``table`` ``[P, num_slots]`` with the inputs of every dead gate (:func:`live_gates`) set to
    the first register: the same machine, written with fewer choices."""
    rows = table.tolist()
    for row in rows:
        for gate, live in enumerate(live_gates(row, layout)):
            if not live:
                first = layout.first_slot[gate]
                row[first:first + GATE_ARITY[layout.gates[gate]]] = [0] * GATE_ARITY[layout.gates[gate]]
    return torch.tensor(rows, dtype=table.dtype)


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
