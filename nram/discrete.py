"""The discrete machine: integer registers and memory, every choice an argmax.

Where the soft machine mixes distributions, this one picks the most likely source of every
gate input and register, so READ and WRITE touch exactly one cell (O(1) memory access per
gate) and a trained controller runs as an ordinary program. Whenever the soft machine's
choices are one-hot, both machines compute the same memories.
"""

from __future__ import annotations

from collections.abc import Iterator

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from nram.circuit import CircuitLayout
from nram.gates import GATE_ARITY

INTEGER_GATES = {
    "zero": lambda a, b, m: torch.zeros_like(a),
    "one": lambda a, b, m: torch.ones_like(a) % m,
    "two": lambda a, b, m: torch.full_like(a, 2) % m,
    "inc": lambda a, b, m: (a + 1) % m,
    "add": lambda a, b, m: (a + b) % m,
    "sub": lambda a, b, m: (a - b) % m,
    "dec": lambda a, b, m: (a - 1) % m,
    "lt": lambda a, b, m: (a < b).long(),
    "le": lambda a, b, m: (a <= b).long(),
    "eq": lambda a, b, m: (a == b).long(),
    "min": lambda a, b, m: torch.minimum(a, b),
    "max": lambda a, b, m: torch.maximum(a, b),
}
"""Every gate but READ and WRITE on integers: ``(a, b, M) -> output`` (mod M where it can overflow)."""


class DiscreteTrace(NamedTuple):
    """A discrete run, step by step (T = steps actually taken by the longest-running example).

    memories ``[T+1, B, M]`` (initial memory first), registers ``[T+1, B, R]`` (registers
    before each step and after the last), gate_inputs ``[T, B, Q, 2]``, register_sources
    ``[T, B, R]``, gate_outputs ``[T, B, Q]``, stop_steps ``[B]`` (1-based step after which
    each example stopped; ``steps`` if it never asked to).
    """

    memories: Tensor
    registers: Tensor
    gate_inputs: Tensor
    register_sources: Tensor
    gate_outputs: Tensor
    stop_steps: Tensor


def discrete_step(memory: Tensor, registers: Tensor, gate_inputs: Tensor, register_sources: Tensor,
                  gates: Sequence[str], running: Tensor | None = None, in_place: bool = False
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Run one timestep of the integer machine for a batch.

    memory ``LongTensor[B, M]``, registers ``LongTensor[B, R]``. ``gate_inputs[b, i, k]`` picks
    input k of gate i among ``(r_0..r_{R-1}, o_0..o_{i-1})`` (inputs beyond the gate's arity
    are ignored); ``register_sources[b, r]`` picks among ``(r_0..r_{R-1}, o_0..o_{Q-1})``.
    READ(p) returns ``memory[p]`` as it was before this step's WRITE; WRITE(p, a) stores a at
    p and outputs 0. Examples where ``running`` ``BoolTensor[B]`` is false keep their memory
    and registers. ``in_place`` writes into ``memory`` instead of a copy: O(B) per WRITE
    rather than O(B M), what long runs need. Returns ``(memory', registers', gate_outputs [B, Q])``.
    """
    memory_size = memory.shape[1]
    num_registers = registers.shape[1]
    sources = registers.new_empty(registers.shape[0], num_registers + len(gates))
    sources[:, :num_registers] = registers
    for i, name in enumerate(gates):
        inputs = sources.gather(1, gate_inputs[:, i, : max(GATE_ARITY[name], 1)])
        a = inputs[:, 0]
        b = inputs[:, 1] if GATE_ARITY[name] == 2 else a
        if name == "read":
            out = memory.gather(1, a[:, None]).squeeze(1)
        elif name == "write":
            if running is not None:  # a stopped example writes back the value its cell holds
                b = torch.where(running, b, memory.gather(1, a[:, None]).squeeze(1))
            write = memory.scatter_ if in_place else memory.scatter
            memory = write(1, a[:, None], b[:, None])
            out = torch.zeros_like(a)
        else:
            out = INTEGER_GATES[name](a, b, memory_size)
        sources[:, num_registers + i] = out
    outputs = sources[:, num_registers:]
    new_registers = sources.gather(1, register_sources)
    if running is not None:
        new_registers = torch.where(running[:, None], new_registers, registers)
    return memory, new_registers, outputs


def split_choices(slot_choices: Tensor, layout: CircuitLayout) -> tuple[Tensor, Tensor]:
    """Turn one option index per choice slot ``[B, num_slots]`` into ``discrete_step`` arguments.

    Returns ``(gate_inputs [B, Q, 2], register_sources [B, R])``; unused inputs are 0.
    """
    batch_size = slot_choices.shape[0]
    gate_inputs = slot_choices.new_zeros(batch_size, layout.num_gates, 2)
    for i, name in enumerate(layout.gates):
        arity = GATE_ARITY[name]
        start = layout.first_slot[i]
        gate_inputs[:, i, :arity] = slot_choices[:, start:start + arity]
    return gate_inputs, slot_choices[:, layout.num_slots - layout.num_registers:]


def _discrete_steps(model: torch.nn.Module, memory0: Tensor, steps: int) -> Iterator[tuple[Tensor, ...]]:
    """Run ``model`` discretely, yielding after each step ``(memory, registers, gate_inputs,
    register_sources, gate_outputs, running)``; ``running`` ``[B]`` is false for the examples that
    have stopped (their memory and registers frozen). Ends early once every example has stopped.
    The yielded memory is one tensor updated in place: clone it to keep a step's."""
    model.check_memory(memory0, steps, integer=True)
    layout: CircuitLayout = model.layout
    readout = model.readout()
    batch_size = memory0.shape[0]
    memory = memory0.clone()  # the steps write into it
    registers = memory0.new_zeros(batch_size, layout.num_registers)
    state = model.controller.initial_state(batch_size, memory0.device)
    running = torch.ones(batch_size, dtype=torch.bool, device=memory0.device)
    for _ in range(steps):
        is_zero = (registers == 0).to(model.dtype)
        choices, stop_logit, state = model.step_logits(is_zero, state, readout)
        gate_inputs, register_sources = split_choices(choices.argmax(-1), layout)
        memory, registers, outputs = discrete_step(memory, registers, gate_inputs, register_sources, layout.gates,
                                                   running=running, in_place=True)
        running = running & ~(stop_logit > 0)
        yield memory, registers, gate_inputs, register_sources, outputs, running
        if not running.any():
            return


@torch.no_grad()
def trace_discrete(model: torch.nn.Module, memory0: Tensor, steps: int) -> DiscreteTrace:
    """Run ``model`` (an :class:`nram.model.NRAM`) discretely and record every step.

    memory0 ``LongTensor[B, M]``. Every softmax becomes its argmax; an example stops after
    the first step whose stop probability ``f_t`` exceeds 0.5 (its memory is frozen from then).
    """
    batch_size = memory0.shape[0]
    stop_steps = torch.full((batch_size,), steps, dtype=torch.long, device=memory0.device)
    record = {"memories": [memory0], "registers": [memory0.new_zeros(batch_size, model.layout.num_registers)],
              "gate_inputs": [], "register_sources": [], "gate_outputs": []}
    was_running = torch.ones(batch_size, dtype=torch.bool, device=memory0.device)
    for t, (memory, registers, gate_inputs, register_sources, outputs, running) in \
            enumerate(_discrete_steps(model, memory0, steps)):
        for key, value in (("memories", memory.clone()), ("registers", registers), ("gate_inputs", gate_inputs),
                           ("register_sources", register_sources), ("gate_outputs", outputs)):
            record[key].append(value)
        stop_steps[was_running & ~running] = t + 1
        was_running = running
    return DiscreteTrace(stop_steps=stop_steps, **{k: torch.stack(v) for k, v in record.items()})


@torch.no_grad()
def run_discrete(model: torch.nn.Module, memory0: Tensor, steps: int) -> Tensor:
    """Run ``model`` as a discrete machine for at most ``steps`` steps, keeping only the current
    memory (O(B M) however many steps, unlike :func:`trace_discrete`).

    memory0 ``LongTensor[B, M]`` -> final memory ``LongTensor[B, M]``.
    """
    memory = memory0
    for memory, *_ in _discrete_steps(model, memory0, steps):
        pass
    return memory
