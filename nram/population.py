"""A population: P NRAMs of one architecture as one module, with a leading member axis.

Every controller weight of shape ``[...]`` is stored as ``[P, ...]``. The controller runs for
all members at once, each layer one batched matmul: the MLP and the LSTM through their own
``features`` (written for a leading member axis, ``MEMBER_AXIS``), any other kind (gated,
table) through ``torch.vmap`` over a functional call of one template controller, which costs
more per step. The
machine has no weights: it runs every member's examples as one batch of ``P * b`` rows,
member-major (rows ``i*b .. (i+1)*b - 1`` are member i's). Members share nothing, so a
member's rollout and gradient depend only on its own weights and examples
(``tests/test_population.py`` checks this against P separate models).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from nram.model import NRAM, MachineConfig


class _Features(nn.Module):
    """``features`` of a controller as a module's forward, for ``functional_call``."""

    def __init__(self, controller: nn.Module):
        super().__init__()
        self.controller = controller

    def forward(self, inputs: Tensor, state: Any) -> tuple[Tensor, Any]:
        """The wrapped controller's ``features(inputs, state)``."""
        return self.controller.features(inputs, state)


class MemberController(nn.Module):
    """P controllers of one kind as one module: parameters ``[P, ...]`` (under ``stacked``).

    ``features`` takes register flags ``[P, b, R]`` and a state batched the same way and
    returns hidden features ``[P, b, H]``; ``readout_weight`` returns ``([P, L, H], [P, L])``.
    """

    def __init__(self, template: nn.Module, size: int):
        super().__init__()
        if size < 1:
            raise ValueError(f"a population needs at least 1 member, got {size}")
        if any(True for _ in template.buffers()):
            raise ValueError("a population's controllers must keep all their state in parameters (no buffers)")
        self.size = size
        self.stacked = copy.deepcopy(template)
        for module in self.stacked.modules():
            for name, parameter in list(module._parameters.items()):
                if parameter is not None:
                    stacked = parameter.detach().unsqueeze(0).repeat(size, *([1] * parameter.dim()))
                    module._parameters[name] = nn.Parameter(stacked, requires_grad=parameter.requires_grad)
        self.member_axis = getattr(template, "MEMBER_AXIS", False)
        """Whether the stacked controller's own ``features`` runs all members (else ``torch.vmap``)."""
        # Kept out of the module tree (a tuple), so its meta-device weights are never parameters.
        self._template = (_Features(copy.deepcopy(template).to("meta")),)

    def member_state(self, index: int) -> dict[str, Tensor]:
        """Member ``index``'s weights as the state dict of one ordinary controller (copies)."""
        return {name: value[index].clone() for name, value in self.stacked.state_dict().items()}

    @torch.no_grad()
    def load_member(self, index: int, state: dict[str, Tensor]) -> None:
        """Set member ``index``'s weights from one ordinary controller's state dict."""
        own = self.stacked.state_dict()
        if set(own) != set(state):
            raise ValueError(f"a member's state needs the keys {sorted(own)}, got {sorted(state)}")
        for name, value in state.items():
            own[name][index].copy_(value)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> Any:
        """The controllers' starting state for ``batch_size = P * b`` rows, batched ``[P, b, ...]``."""
        state = self.stacked.initial_state(batch_size // self.size, device)
        if state is None:
            return None
        return tuple(part.expand(self.size, *part.shape).contiguous() for part in state)

    def features(self, inputs: Tensor, state: Any) -> tuple[Tensor, Any]:
        """flags ``[P, b, R]``, state -> (hidden ``[P, b, H]``, new state), each member on its own weights."""
        if self.member_axis:
            return self.stacked.features(inputs, state)
        template = self._template[0]
        params = {f"controller.{name}": value for name, value in self.stacked.named_parameters()}

        def member(member_params: dict[str, Tensor], member_inputs: Tensor, member_state: Any):
            hidden, new_state = functional_call(template, member_params, (member_inputs, member_state))
            return hidden, () if new_state is None else new_state

        hidden, new_state = torch.vmap(member)(params, inputs, () if state is None else state)
        return hidden, new_state if new_state != () else None

    def readout_weight(self) -> tuple[Tensor, Tensor]:
        """``(weight [P, num_logits, H], bias [P, num_logits])`` (zero bias if the layer has none)."""
        weight, bias = self.stacked.readout_weight()
        return weight, bias if bias is not None else weight.new_zeros(weight.shape[:2])


class PopulationNRAM(NRAM):
    """P NRAMs with one :class:`MachineConfig`, run as one batch (see the module docstring).

    ``forward(memory0 [P*b, M], steps)`` returns one :class:`nram.model.Rollout` over all
    ``P * b`` rows, member-major. Weights start as one random draw copied to every member;
    set each with :meth:`load_member`.
    """

    def __init__(self, config: MachineConfig, size: int):
        if config.dropout != "none":
            raise ValueError(f"a population's controllers take no dropout (dropout = 'none'), got {config.dropout!r}")
        super().__init__(config)
        self.size = size
        self.controller = MemberController(self.controller, size)

    def member_state(self, index: int) -> dict[str, Tensor]:
        """Member ``index`` as an ordinary :class:`NRAM` state dict."""
        return {f"controller.{name}": value for name, value in self.controller.member_state(index).items()}

    def load_member(self, index: int, state: dict[str, Tensor]) -> None:
        """Set member ``index`` from an ordinary :class:`NRAM` state dict."""
        prefix = "controller."
        self.controller.load_member(index, {name[len(prefix):]: value for name, value in state.items()
                                            if name.startswith(prefix)})

    def member_model(self, index: int) -> NRAM:
        """Member ``index`` as an ordinary :class:`NRAM` (a copy on the same device)."""
        model = NRAM(self.config).to(self.padding_index.device, self.dtype)
        model.load_state_dict(self.member_state(index))
        return model

    def readout(self) -> tuple[Tensor, Tensor]:
        """Each member's read-out with the blank output: ``([P, num_logits + 1, H], [P, num_logits + 1, 1])``."""
        weight, bias = self.controller.readout_weight()
        weight = torch.cat([weight, weight.new_zeros(self.size, 1, weight.shape[2])], dim=1)
        bias = torch.cat([bias, bias.new_full((self.size, 1), float("-inf"))], dim=1)
        return weight, bias[:, :, None]

    def _logits(self, inputs: Tensor, controller_state: Any, readout: tuple[Tensor, Tensor]) -> tuple[Tensor, Any]:
        """flags ``[P*b, R]`` -> (``[logits, blank]`` ``[num_logits + 1, P*b]``, state), member-major."""
        hidden, controller_state = self.controller.features(inputs.reshape(self.size, -1, inputs.shape[1]),
                                                            controller_state)
        weight, bias = readout
        logits = torch.baddbmm(bias, weight, hidden.transpose(1, 2))  # [P, num_logits + 1, b]
        return logits.transpose(0, 1).reshape(logits.shape[1], -1), controller_state

    def check_memory(self, memory0: Tensor, steps: int, integer: bool | None = None, values: bool = True) -> None:
        """:meth:`NRAM.check_memory`, and the batch must be P member blocks of equal size."""
        super().check_memory(memory0, steps, integer, values)
        if memory0.shape[0] % self.size:
            raise ValueError(f"a population of {self.size} needs a batch that is a multiple of {self.size}, "
                             f"got {memory0.shape[0]}")

    def output_memory(self, memory0: Tensor, steps: int) -> Tensor:
        """``sum_t p_t memories[t]`` ``[P*b, M, M]``, streamed (the C inference runs single models only)."""
        self.check_memory(memory0, steps)
        return self._streamed_output(memory0, steps)
