"""A worked example in plain text: memory before and after, and the circuit at every step."""

from __future__ import annotations

from torch import Tensor

from nram.circuit import CircuitLayout
from nram.discrete import DiscreteTrace
from nram.gates import GATE_ARITY
from tasks.base import TaskBatch


def source_names(layout: CircuitLayout) -> list[str]:
    """Names of every source a choice can pick: ``r0..r{R-1}`` then the gate names."""
    return [f"r{r}" for r in range(layout.num_registers)] + list(layout.gates)


def format_cells(cells: Tensor, mark: Tensor | None = None) -> str:
    """``[M]`` integers as one line; cells where ``mark`` is True are bracketed."""
    return " ".join(f"[{v}]" if mark is not None and mark[i] else f"{v}" for i, v in enumerate(cells.tolist()))


def live_gates(gate_inputs: list[list[int]], register_sources: list[int], layout: CircuitLayout) -> set[int]:
    """Indices of the gates whose work matters in one step: WRITE (it changes memory), the gates
    a register takes its value from, and, recursively, the gates feeding those."""
    live = {i for i, name in enumerate(layout.gates) if name == "write"}
    live |= {s - layout.num_registers for s in register_sources if s >= layout.num_registers}
    for i in reversed(range(layout.num_gates)):
        if i in live:
            live |= {s - layout.num_registers for s in gate_inputs[i][:GATE_ARITY[layout.gates[i]]]
                     if s >= layout.num_registers}
    return live


def format_trace(trace: DiscreteTrace, layout: CircuitLayout, batch: TaskBatch, example: int = 0) -> str:
    """The discrete run of one example: each step's gate calls with their values (only the
    gates whose results are used, see :func:`live_gates`; WRITE as the cell it sets), the
    register updates, then the final memory against the target (scored cells bracketed)."""
    names = source_names(layout)
    lines = [f"memory before: {format_cells(batch.memory[example])}"]
    steps = int(trace.stop_steps[example])
    for t in range(steps):
        values = trace.registers[t, example].tolist() + trace.gate_outputs[t, example].tolist()
        calls = []
        gate_inputs = trace.gate_inputs[t, example].tolist()
        sources = trace.register_sources[t, example].tolist()
        for i in sorted(live_gates(gate_inputs, sources, layout)):
            name = layout.gates[i]
            chosen = gate_inputs[i][:GATE_ARITY[name]]
            call = f"{name}({', '.join(names[s] for s in chosen)})"
            if name == "write":  # its output is always 0; what matters is the cell it sets
                address, value = (values[s] for s in chosen)
                calls.append(f"{call}: cell {address} := {value}")
            else:
                calls.append(f"{call}={values[layout.num_registers + i]}")
        updates = [f"r{r}<-{names[s]}={values[s]}" for r, s in enumerate(sources)]
        lines.append(f"step {t + 1}: " + "  ".join(calls))
        lines.append("        " + "  ".join(updates))
    lines.append(f"stopped after step {steps}")
    final = trace.memories[-1, example]
    lines.append(f"memory after:  {format_cells(final, batch.mask[example])}")
    lines.append(f"target:        {format_cells(batch.target[example], batch.mask[example])}")
    wrong = int(((final != batch.target[example]) & batch.mask[example]).sum())
    lines.append(f"scored cells wrong: {wrong} of {int(batch.mask[example].sum())} ([v]: a scored cell)")
    return "\n".join(lines)
