"""One timestep of the soft (differentiable) machine.

Given the controller's choice weights, the gates run in order. Gate i's inputs are
mixtures of ``(r_1..r_R, o_1..o_{i-1})``; READ sees memory before this step's WRITE when it
comes first. Then every register is replaced, all at once, by a mixture of
``(old registers, all gate outputs)``. Shapes: memory ``[B, M, M]``, registers ``[B, R, M]``,
choice weights ``[B, num_slots, R+Q]`` (rows are softmaxes, zero on missing options).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from nram import gates as G
from nram.circuit import CircuitLayout
from nram.gates import GATE_ARITY


class MachineState(NamedTuple):
    """The machine between timesteps: memory ``[B, M, M]`` and registers ``[B, R, M]``."""

    memory: Tensor
    registers: Tensor


def initial_state(memory0: Tensor, num_registers: int) -> MachineState:
    """Memory ``[B, M, M]`` as given and every register one-hot 0: ``[B, R, M]``."""
    registers = memory0.new_zeros(memory0.shape[0], num_registers, memory0.shape[1])
    registers[:, :, 0] = 1.0
    return MachineState(memory0, registers)


def constant_values(batch_size: int, memory_size: int, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """One-hot distributions of 0, 1 and 2 (mod M): ``[3, B, M]``, built once per rollout."""
    values = torch.arange(3, device=device) % memory_size
    return F.one_hot(values, memory_size).to(dtype)[:, None, :].expand(3, batch_size, memory_size)


def machine_step(state: MachineState, weights: Tensor, layout: CircuitLayout, constants: Tensor) -> MachineState:
    """Advance the soft machine by one timestep.

    ``weights[b, s, j]`` is the probability that choice slot s (laid out by ``layout``) takes
    source j, with zeros on the options a slot does not have; ``constants`` comes from
    :func:`constant_values`. Returns the new :class:`MachineState`. Differentiable in memory,
    registers and weights, through a hand-written backward (:class:`_MachineStep`).
    """
    memory, registers = _MachineStep.apply(state.memory, state.registers, weights, layout, constants)
    return MachineState(memory, registers)


def _run_gates(memory: Tensor, registers: Tensor, weights: Tensor, layout: CircuitLayout,
               constants: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The forward pass of one step, without autograd.

    Every slot's mixture is linear in the sources, so instead of stacking the sources for
    each gate, ``mixed[b, s]`` accumulates ``weights[b, s, j] * source_j`` as each source
    appears. A slot of gate i gives weight 0 to gate i's output and to later ones, so once
    gate i has run every later slot already holds its input, and at the end ``mixed`` holds
    every gate's inputs and the new registers. Returns ``(memory', mixed [B, slots, M],
    gate outputs Q x [B, M])``.
    """
    num_registers = layout.num_registers
    mixed = torch.bmm(weights[:, :, :num_registers], registers)
    slots = mixed.unbind(1)  # views: they see every later in-place update of mixed
    outputs = []
    for i, name in enumerate(layout.gates):
        arity = GATE_ARITY[name]
        first = layout.first_slot[i]
        if name == "write":
            memory = G.write(memory, slots[first], slots[first + 1])
            out = constants[0]
        elif arity == 0:
            out = constants[G.GATE_CONSTANTS[name]]
        elif name == "read":
            out = G.read(memory, slots[first])
        else:
            out = G.GATE_FUNCTIONS[name](slots[first], slots[first + 1] if arity == 2 else None)
        users = layout.first_slot[i + 1] if i + 1 < layout.num_gates else layout.num_slots - num_registers
        mixed[:, users:].addcmul_(weights[:, users:, num_registers + i, None], out[:, None, :])
        outputs.append(out)
    return memory, mixed, outputs


class _MachineStep(torch.autograd.Function):
    """One soft timestep with a hand-written backward.

    Autograd through the step records some 600 small operations per timestep; at the batch
    sizes NRAM trains with, their bookkeeping costs more than the arithmetic. The backward
    walks the gates in reverse: the gradient reaching gate i's output is
    ``sum_s weights[s, R+i] grad_mixed[s]`` (only later slots and the registers use it), the
    gate's vector-Jacobian product (:data:`nram.gates.GATE_GRADIENTS`) adds into its input
    slots, and finally ``grad_weights = grad_mixed sources^T``.
    """

    @staticmethod
    def forward(ctx, memory: Tensor, registers: Tensor, weights: Tensor, layout: CircuitLayout,
                constants: Tensor) -> tuple[Tensor, Tensor]:
        new_memory, mixed, outputs = _run_gates(memory, registers, weights, layout, constants)
        if any(ctx.needs_input_grad):
            ctx.layout = layout
            ctx.save_for_backward(memory, weights, mixed, torch.cat([registers, torch.stack(outputs, dim=1)], dim=1))
        return new_memory, mixed[:, layout.num_slots - layout.num_registers:]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_memory: Tensor, grad_registers: Tensor):
        memory, weights, mixed, sources = ctx.saved_tensors
        layout: CircuitLayout = ctx.layout
        num_registers = layout.num_registers
        grad_mixed = torch.zeros_like(mixed)
        grad_mixed[:, layout.num_slots - num_registers:] = grad_registers
        slots, grad_slots = mixed.unbind(1), grad_mixed.unbind(1)
        output_weights = weights[:, :, num_registers:].transpose(1, 2)[:, :, None, :].unbind(1)  # [B, 1, slots]
        for i in reversed(range(layout.num_gates)):
            name = layout.gates[i]
            arity = GATE_ARITY[name]
            first = layout.first_slot[i]
            if name == "write":  # memory' = memory + p (v - memory); its output is a constant
                address, value = slots[first], slots[first + 1]
                grad_slots[first].add_((grad_memory * (value[:, None, :] - memory)).sum(-1))
                grad_slots[first + 1].add_(torch.bmm(address[:, None, :], grad_memory).squeeze(1))
                grad_memory = grad_memory * (1.0 - address)[:, :, None]
                continue
            if arity == 0:
                continue
            grad_out = torch.bmm(output_weights[i], grad_mixed).squeeze(1)
            if name == "read":  # out = p^T memory, with memory as it was before WRITE
                grad_slots[first].add_(torch.bmm(memory, grad_out[:, :, None]).squeeze(-1))
                grad_memory = grad_memory + slots[first][:, :, None] * grad_out[:, None, :]
                continue
            grad_a, grad_b = G.GATE_GRADIENTS[name](slots[first], slots[first + 1] if arity == 2 else None,
                                                    grad_out)
            grad_slots[first].add_(grad_a)
            if grad_b is not None:
                grad_slots[first + 1].add_(grad_b)
        grad_weights = torch.bmm(grad_mixed, sources.transpose(1, 2))
        grad_registers_in = torch.bmm(weights[:, :, :num_registers].transpose(1, 2), grad_mixed)
        return grad_memory, grad_registers_in, grad_weights, None, None
