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
        """Index into ``[logits, blank]`` that spreads the controller's output over padded choices.

        The result has ``(R + Q) * num_slots + 1`` entries, source-major: entry
        ``j * num_slots + s`` is option j of slot s, and the last one is the stop logit. Options a
        slot does not have point at the blank (index ``num_logits``), which holds ``-inf``, so no
        softmax or argmax ever picks them. Source-major puts the batch innermost once the
        logits are ``[P, B]`` (see :func:`spread_logits`).
        """
        blank = self.num_logits
        index = torch.full((self.num_sources, self.num_slots), blank, dtype=torch.long)
        offset = 0
        for slot, width in enumerate(self.slot_widths):
            index[:width, slot] = torch.arange(offset, offset + width)
            offset += width
        return torch.cat([index.flatten(), torch.tensor([self.num_logits - 1])]).to(device)

    def action_nvec(self) -> list[int]:
        """Option counts of every choice, then 2 for the stop bit (a ``MultiDiscrete`` space)."""
        return list(self.slot_widths) + [2]


def readout_with_blank(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """The controller's read-out (``weight [num_logits, H]``, ``bias [num_logits]``) with one more
    output, the blank, fixed at ``-inf``: ``(weight [num_logits + 1, H], bias [num_logits + 1, 1])``.

    Built once per rollout; ``addmm(bias, weight, hidden.T)`` then gives ``[logits, blank]``
    batch-last (``[num_logits + 1, B]``) in one op, ready for :func:`spread_logits`.
    """
    weight = torch.cat([weight, weight.new_zeros(1, weight.shape[1])])
    bias = torch.cat([bias, bias.new_full((1,), float("-inf"))])
    return weight, bias[:, None]


def spread_logits(logits: Tensor, padding_index: Tensor, layout: CircuitLayout) -> tuple[Tensor, Tensor]:
    """``[logits, blank]`` ``[num_logits + 1, B]`` -> (padded choice logits ``[R+Q, num_slots, B]``,
    ``-inf`` on missing options, and the stop logit ``[B]``); ``padding_index`` from
    :meth:`CircuitLayout.padding_index`."""
    padded = logits.index_select(0, padding_index)
    return padded[:-1].view(layout.num_sources, layout.num_slots, -1), padded[-1]
