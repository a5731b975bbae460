"""One timestep of the soft (differentiable) machine.

Given the controller's choice weights, the gates run in order. Gate i's inputs are
mixtures of ``(r_1..r_R, o_1..o_{i-1})``; READ sees memory before this step's WRITE when it
comes first. Then every register is replaced, all at once, by a mixture of
``(old registers, all gate outputs)``. Shapes: memory ``[B, M, M]``, registers ``[B, R, M]``,
choice weights ``[B, num_slots, R+Q]`` (rows are softmaxes, zero on missing options).

The gates in :data:`nram.gates.RESCALED_GATES` divide their output by its total, which is 1
up to float rounding, so that rounding cannot compound from step to step. The backward takes
that total as 1 (dropping a factor 1 / total that differs from 1 by the rounding): the gradient
at a rescaled output ``y`` is ``g - <g, y>``, the exact one of ``x / sum(x)`` at a sum of 1.
Subtracting ``<g, y>`` changes no derivative along the simplex, where training moves; it
matters to finite differences off it (``gradcheck``).

Inside, the step works value-major (see :mod:`nram.gates`): memory ``[M, M, B]``, registers
``[R, M, B]``, weights ``[R+Q, slots, B]``, so the batch is the innermost, contiguous
dimension of every operation. :func:`machine_step` takes and returns the batch-first shapes
above (as views: no copies when the tensors are stored value-major); :func:`step_values`
is the same step value-major, which :class:`nram.model.NRAM` runs a whole rollout in.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from nram import gates as G
from nram import native
from nram.circuit import CircuitLayout, spread_logits
from nram.gates import GATE_ARITY, GATE_CONSTANTS, RESCALED_GATES


BMM_MIN_SIZE = 32
"""From this many values on, the backward forms ``grad_weights`` by a batched matmul (see :func:`_pairwise_dot`)."""


class MachineState(NamedTuple):
    """The machine between timesteps: memory ``[B, M, M]`` and registers ``[B, R, M]``."""

    memory: Tensor
    registers: Tensor


def one_hot_cells(memory0: Tensor, dtype: torch.dtype) -> Tensor:
    """Integer cells ``LongTensor[B, M]`` -> their one-hot distributions, value-major ``[M, M, B]``."""
    values = torch.arange(memory0.shape[1], device=memory0.device)
    return (memory0.T[:, None, :] == values[:, None]).to(dtype)


def initial_registers(batch_size: int, num_registers: int, memory_size: int, *,
                      dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Every register one-hot 0, value-major: ``[R, M, B]``."""
    registers = torch.zeros(num_registers, memory_size, batch_size, dtype=dtype, device=device)
    registers[:, 0] = 1.0
    return registers


def constant_values(batch_size: int, memory_size: int, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """One-hot distributions of 0, 1 and 2 (mod M), value-major: ``[3, M, B]``, built once per rollout."""
    values = torch.arange(3, device=device) % memory_size
    one_hot = (values[:, None] == torch.arange(memory_size, device=device)).to(dtype)
    return one_hot[:, :, None].expand(3, memory_size, batch_size)


def machine_step(state: MachineState, weights: Tensor, layout: CircuitLayout, constants: Tensor) -> MachineState:
    """Advance the soft machine by one timestep.

    ``weights[b, s, j]`` is the probability that choice slot s (laid out by ``layout``) takes
    source j, with zeros on the options a slot does not have; ``constants`` comes from
    :func:`constant_values`. Returns the new :class:`MachineState`. Differentiable in memory,
    registers and weights, through a hand-written backward (:class:`_MachineStep`).
    """
    memory, registers = step_values(state.memory.permute(1, 2, 0), state.registers.permute(1, 2, 0),
                                    weights.permute(2, 1, 0), layout, constants)
    return MachineState(memory.permute(2, 0, 1), registers.permute(2, 0, 1))


def step_values(memory: Tensor, registers: Tensor, weights: Tensor, layout: CircuitLayout,
                constants: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`machine_step` value-major: memory ``[M, M, B]``, registers ``[R, M, B]``, weights
    ``[R+Q, slots, B]`` -> ``(memory', registers')``, value-major too."""
    return _MachineStep.apply(memory, registers, weights, layout, constants)


def choice_weights(logits: Tensor, padding_index: Tensor, layout: CircuitLayout) -> Tensor:
    """The step's weights from the controller's ``[logits, blank]`` ``[num_logits + 1, B]``
    (see :func:`nram.circuit.readout_with_blank`): every slot's softmax over its own options,
    value-major ``[R+Q, slots, B]``, 0 on the options a slot lacks.

    Where :func:`nram.native.usable` allows, the softmax runs in C, slot by slot on the compact
    logits (:class:`_ChoiceSoftmax`); elsewhere it runs over the padded choices of
    :func:`nram.circuit.spread_logits`, whose ``-inf`` entries give the zeros.
    """
    if native.usable(logits, training=torch.is_grad_enabled() and logits.requires_grad):
        return _ChoiceSoftmax.apply(logits, layout)
    return torch.softmax(spread_logits(logits, padding_index, layout)[0], dim=0)


class _ChoiceSoftmax(torch.autograd.Function):
    """:func:`choice_weights` by :func:`nram.native.choice_softmax`, with its backward."""

    @staticmethod
    def forward(ctx, logits: Tensor, layout: CircuitLayout) -> Tensor:
        weights = native.choice_softmax(logits.contiguous(), layout)
        ctx.layout, ctx.num_rows = layout, logits.shape[0]
        ctx.save_for_backward(weights)
        return weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_weights: Tensor):
        (weights,) = ctx.saved_tensors
        return native.choice_softmax_backward(weights, grad_weights, ctx.num_rows, ctx.layout), None


@functools.lru_cache(maxsize=64)
def _known_sources(layout: CircuitLayout) -> tuple[tuple[int, int | None], ...]:
    """The sources known before any gate runs: ``(source index, None)`` for every register,
    then ``(source index, value)`` for every constant gate."""
    registers = tuple((j, None) for j in range(layout.num_registers))
    return registers + tuple((layout.num_registers + i, GATE_CONSTANTS[name])
                             for i, name in enumerate(layout.gates) if name in GATE_CONSTANTS)


def _run_gates(memory: Tensor, registers: Tensor, weights: Tensor, layout: CircuitLayout,
               constants: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The forward pass of one step, value-major and without autograd.

    Every slot's input is linear in the sources, so instead of stacking the sources for
    each gate, ``mixed[s]`` accumulates ``weights[j, s] * source_j`` as each source appears,
    starting with the registers and the constant gates. A slot of gate i gives weight 0 to
    gate i's output and to later ones, so once gate i has run every later slot already
    holds its input, and at the end ``mixed`` holds every gate's inputs and the new
    registers. Returns ``(memory' [M, M, B], mixed [slots, M, B], sources: the R + Q
    values [M, B] in weight order)``.
    """
    num_registers = layout.num_registers
    rows = weights.unbind(0)  # rows[j] [slots, 1, B]: every slot's weight on source j
    register_values, constant_list = registers.unbind(0), constants.unbind(0)
    sources: list[Tensor] = [None] * layout.num_sources
    mixed = None
    for j, value in _known_sources(layout):
        sources[j] = register_values[j] if value is None else constant_list[value]
        mixed = rows[j] * sources[j] if mixed is None else mixed.addcmul_(rows[j], sources[j])
    slots = mixed.unbind(0)  # views: they see every later in-place update of mixed
    for i, name in enumerate(layout.gates):
        first = layout.first_slot[i]
        if name == "write":
            memory = G.write_values(memory, slots[first], slots[first + 1])
            continue
        if name in GATE_CONSTANTS:
            continue
        if name == "read":
            out = G.read_values(memory, slots[first])
        else:
            out = G.GATE_FUNCTIONS[name](slots[first], slots[first + 1] if GATE_ARITY[name] == 2 else None)
        if name in RESCALED_GATES:
            out = out * out.sum(0, keepdim=True).reciprocal()
        mixed.addcmul_(rows[num_registers + i], out)
        sources[num_registers + i] = out
    return memory, mixed, sources


class _MachineStep(torch.autograd.Function):
    """One soft timestep, value-major, with a hand-written backward.

    Autograd through the step records hundreds of small operations per timestep; at the batch
    sizes NRAM trains with, their bookkeeping costs more than the arithmetic. Where
    :func:`nram.native.usable` allows (on the CPU, unless ``NRAM_NATIVE`` says otherwise)
    the step runs in C, one call per timestep each way; otherwise it runs :func:`_run_gates`
    and :func:`_backward_gates`, the same formulas in PyTorch.
    """

    @staticmethod
    def forward(ctx, memory: Tensor, registers: Tensor, weights: Tensor, layout: CircuitLayout,
                constants: Tensor) -> tuple[Tensor, Tensor]:
        ctx.native = native.usable(memory, training=any(ctx.needs_input_grad))
        if ctx.native:  # the C step reads raw memory, so it runs on (and saves) contiguous tensors
            memory, registers, weights = memory.contiguous(), registers.contiguous(), weights.contiguous()
            new_memory, mixed, sources = native.step_forward(memory, registers, weights, layout)
        else:
            weights = weights.unsqueeze(2)
            new_memory, mixed, sources = _run_gates(memory, registers, weights, layout, constants)
            sources = torch.stack(sources)
        if any(ctx.needs_input_grad):
            ctx.layout = layout
            ctx.save_for_backward(memory, weights, mixed, sources)
        return new_memory, mixed[layout.num_slots - layout.num_registers:]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_memory: Tensor, grad_registers: Tensor):
        step_backward = native.step_backward if ctx.native else _backward_gates
        grads = step_backward(*ctx.saved_tensors, grad_memory, grad_registers, ctx.layout)
        return *grads, None, None


def _backward_gates(memory: Tensor, weights: Tensor, mixed: Tensor, sources: Tensor, grad_memory: Tensor,
                    grad_registers: Tensor, layout: CircuitLayout) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of :func:`_run_gates` (weights ``[R+Q, slots, 1, B]``, sources stacked
    ``[R+Q, M, B]``): ``(grad memory, grad registers, grad weights [R+Q, slots, B])``.

    It mirrors the forward's accumulation: ``grad_sources[j]`` collects ``weights[j, s] *
    grad_slot[s]`` as each slot's gradient becomes known, starting with the registers' slots.
    Walking the gates in reverse, gate i's output has received every contribution (only later
    slots use it) when its turn comes; its vector-Jacobian product
    (:data:`nram.gates.GATE_GRADIENTS`) gives its input slots' gradients, and finally
    ``grad_weights[j, s] = <grad_slot[s], source_j>``.
    """
    num_registers, first_register_slot = layout.num_registers, layout.num_slots - layout.num_registers
    columns = weights.unbind(1)  # columns[s] [R+Q, 1, B]: slot s's weights on every source
    grad_sources = torch.linalg.vecdot(weights[:, first_register_slot:], grad_registers, dim=1)
    grad_outputs = grad_sources.unbind(0)  # views: they see every later in-place update
    grad_slots: list[Tensor] = [None] * first_register_slot + list(grad_registers.unbind(0))
    slots = mixed.unbind(0)
    for i in reversed(range(layout.num_gates)):
        name = layout.gates[i]
        first = layout.first_slot[i]
        if name == "write":  # memory' = memory + p (v - memory); its output is a constant
            address, value = slots[first], slots[first + 1]
            grads = (torch.linalg.vecdot(grad_memory, value - memory, dim=1),
                     G.read_values(grad_memory, address))
            grad_memory = torch.addcmul(grad_memory, grad_memory, address[:, None], value=-1.0)
        elif name in GATE_CONSTANTS:
            continue
        else:
            grad_out = grad_outputs[num_registers + i]
            if name in RESCALED_GATES:  # through y = x / sum(x) at sum(x) = 1
                grad_out = grad_out - (grad_out * sources[num_registers + i]).sum(0, keepdim=True)
            if name == "read":  # out = p^T memory, with memory as it was before WRITE
                grads = (torch.linalg.vecdot(memory, grad_out, dim=1),)
                grad_memory = torch.addcmul(grad_memory, slots[first][:, None], grad_out)
            else:
                binary = GATE_ARITY[name] == 2
                grads = G.GATE_GRADIENTS[name](slots[first], slots[first + 1] if binary else None,
                                               grad_out)[:1 + binary]
        for slot, grad in enumerate(grads, start=first):
            grad_slots[slot] = grad
            grad_sources.addcmul_(columns[slot], grad)
    grad_weights = _pairwise_dot(sources, torch.stack(grad_slots))
    return grad_memory, grad_sources[:num_registers], grad_weights


def _pairwise_dot(sources: Tensor, grad_slots: Tensor) -> Tensor:
    """``out[j, s] = <sources[j], grad_slots[s]>`` over the values: ``[K, M, B]``, ``[S, M, B]`` -> ``[K, S, B]``.

    A broadcast product for small M (one op, the fewest at small batches); from
    :data:`BMM_MIN_SIZE` values on, a batched matmul, which avoids the ``[K, S, M, B]``
    temporary (2-3x faster at M = 64, batch 256).
    """
    if sources.shape[1] < BMM_MIN_SIZE:
        return (sources[:, None] * grad_slots).sum(2)
    return torch.bmm(sources.permute(2, 0, 1).contiguous(), grad_slots.permute(2, 1, 0).contiguous()).permute(1, 2, 0)
