"""Which choices a controller makes at each timestep, and how its logits are laid out.

With R registers and gates ``g_0..g_{Q-1}``, one timestep makes these choices:

- every input k of gate i picks one of ``R + i`` sources: registers ``r_0..r_{R-1}``, then
  the outputs ``o_0..o_{i-1}`` of the gates before it;
- every register picks its next value among ``R + Q`` sources: old registers, then all
  gate outputs;
- the stop bit.

The controller emits the logits of all choices as one flat vector, slot after slot in that
order, each slot exactly as wide as its number of options, then the stop logit last.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
import torch
from torch import Tensor

from nram.gates import GATE_ARITY, GATE_NAMES, check_gate_name


@dataclass(frozen=True)
class CircuitLayout:
    """The choices of one timestep for ``num_registers`` registers and the given gates."""

    num_registers: int
    gates: tuple[str, ...] = GATE_NAMES

    def __post_init__(self) -> None:
        if self.num_registers < 1:
            raise ValueError(f"num_registers must be >= 1, got {self.num_registers}")
        gates = tuple(self.gates)
        if not gates:
            raise ValueError("a machine needs at least one gate")
        for name in gates:
            check_gate_name(name)
        order = [GATE_NAMES.index(name) for name in gates]
        if order != sorted(set(order)):
            raise ValueError(f"gates must be distinct and in paper order {GATE_NAMES}, got {gates}")
        object.__setattr__(self, "gates", gates)

    @property
    def num_gates(self) -> int:
        """Q, the number of gates."""
        return len(self.gates)

    @property
    def num_sources(self) -> int:
        """R + Q: the widest choice (a register's next value)."""
        return self.num_registers + self.num_gates

    @cached_property
    def input_slots(self) -> tuple[tuple[int, int], ...]:
        """``(gate index, number of options)`` for every gate input, in logit order."""
        return tuple((i, self.num_registers + i)
                     for i, name in enumerate(self.gates) for _ in range(GATE_ARITY[name]))

    @cached_property
    def slot_widths(self) -> tuple[int, ...]:
        """Number of options of every choice slot: gate inputs, then registers (stop excluded)."""
        return tuple(width for _, width in self.input_slots) + (self.num_sources,) * self.num_registers

    @property
    def num_slots(self) -> int:
        """Gate-input slots plus register slots."""
        return len(self.slot_widths)

    @property
    def num_logits(self) -> int:
        """Length of the controller's output: every slot's options plus the stop logit."""
        return sum(self.slot_widths) + 1

    @cached_property
    def first_slot(self) -> tuple[int, ...]:
        """Index of each gate's first input slot (its later inputs follow it)."""
        starts, slot = [], 0
        for name in self.gates:
            starts.append(slot)
            slot += GATE_ARITY[name]
        return tuple(starts)

    def padding_index(self, device: torch.device | str | None = None) -> Tensor:
        """Index into ``[logits, blank]`` that spreads the controller's output over padded slots.

        The result has ``num_slots * (R + Q) + 1`` entries: slot after slot, each ``R + Q``
        wide, then the stop logit. Options a slot does not have point at the blank (index
        ``num_logits``), which holds ``-inf``, so no softmax or argmax ever picks them.
        """
        blank = self.num_logits
        index, offset = [], 0
        for width in self.slot_widths:
            index.extend(range(offset, offset + width))
            index.extend([blank] * (self.num_sources - width))
            offset += width
        index.append(self.num_logits - 1)
        return torch.tensor(index, dtype=torch.long, device=device)

    def action_nvec(self) -> list[int]:
        """Option counts of every choice, then 2 for the stop bit (a ``MultiDiscrete`` space)."""
        return list(self.slot_widths) + [2]


def padded_readout(weight: Tensor, bias: Tensor, padding_index: Tensor) -> tuple[Tensor, Tensor]:
    """The controller's read-out (``weight [num_logits, H]``, ``bias``) rearranged to emit padded logits.

    Returns ``(weight [P, H], bias [P])`` with ``P = num_slots * (R + Q) + 1``: rows of missing
    options are zero with bias ``-inf``. Built once per rollout, so each timestep's logits are a
    single ``addmm`` (and gradients still reach the read-out).
    """
    weight = torch.cat([weight, weight.new_zeros(1, weight.shape[1])])
    bias = torch.cat([bias, bias.new_full((1,), float("-inf"))])
    return weight.index_select(0, padding_index), bias.index_select(0, padding_index)


def split_padded_logits(padded: Tensor, layout: CircuitLayout) -> tuple[Tensor, Tensor]:
    """Padded logits ``[B, P]`` -> (choice logits ``[B, num_slots, R+Q]``, stop logit ``[B]``)."""
    choices = padded[:, :-1].view(padded.shape[0], layout.num_slots, layout.num_sources)
    return choices, padded[:, -1]
