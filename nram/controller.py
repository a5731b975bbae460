"""Controllers: the trainable part of the machine.

A controller sees only ``P(r_i = 0)`` for each register (``[B, R]``) and its own recurrent
state, and emits every choice logit plus the stop logit (``[B, num_logits]``, laid out by
:class:`nram.circuit.CircuitLayout`). Nothing in it depends on the memory size M, so weights
trained at M = 8 run unchanged at M = 64.

Every controller has ``initial_state(batch_size, device)``, ``features(inputs, state) ->
(hidden [B, H], state)`` and ``readout_weight() -> (weight, bias)``, the linear map from
hidden to logits; ``forward`` is the two together. The MLP's and the LSTM's ``features`` also
run a population's P controllers at once (``MEMBER_AXIS``: weights, inputs and state with a
leading member axis, :func:`member_linear`). The machine uses them apart, taking the
read-out once per rollout and computing the logits batch-last (``[num_logits, B]``, see
:func:`nram.circuit.spread_logits`). Controllers with
dropout also have ``resample(generator)``, which draws the dropout pattern for a rollout.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nram.gated import GatedMLP
from nram.layers import BatchwiseDropoutMLP, SamplewiseDropoutMLP

CONTROLLER_KINDS = ("mlp", "lstm", "gated", "table")
DROPOUT_KINDS = ("none", "batchwise", "samplewise")
TABLE_MAX_REGISTERS = 12
"""The most registers a table controller takes: 4,096 columns of logits."""


def member_linear(inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear`` for one weight (``[B, in]``, ``[out, in]``, ``[out]``) or for P members at once:
    inputs ``[P, B, in]``, weight ``[P, out, in]``, bias ``[P, out]`` -> ``[P, B, out]``, one batched matmul."""
    if weight.dim() == 2:
        return F.linear(inputs, weight, bias)
    if bias is None:
        return torch.bmm(inputs, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))


class MLPController(nn.Module):
    """A feed-forward controller: ``inputs -> [Linear, ReLU] x layers -> Linear -> logits``.

    It has no memory of its own beyond the registers (the paper's feed-forward variant).
    """

    MEMBER_AXIS = True
    """``features`` runs P members at once given weights ``[P, ...]`` and inputs ``[P, B, R]``."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 64, num_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_size
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU()]
            width = hidden_size
        self.body = nn.Sequential(*layers)
        self.readout = nn.Linear(width, output_size)
        self.hidden_layers = tuple(layer for layer in layers if isinstance(layer, nn.Linear))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> None:
        """A feed-forward controller carries no state."""
        return None

    def features(self, inputs: Tensor, state: None = None) -> tuple[Tensor, None]:
        """inputs ``[B, R]`` -> (last hidden layer ``[B, H]``, None).

        The same as ``self.body(inputs)``, without a module call per layer (at batch 32 their
        overhead costs more than the layers' arithmetic).
        """
        hidden = inputs
        for layer in self.hidden_layers:
            hidden = torch.relu(member_linear(hidden, layer.weight, layer.bias))
        return hidden, None

    def readout_weight(self) -> tuple[Tensor, Tensor]:
        """``(weight [num_logits, H], bias [num_logits])`` of the read-out."""
        return self.readout.weight, self.readout.bias

    def forward(self, inputs: Tensor, state: None = None) -> tuple[Tensor, None]:
        """inputs ``[B, R]`` -> (logits ``[B, num_logits]``, None)."""
        return self.readout(self.body(inputs)), None


class LSTMController(nn.Module):
    """A recurrent controller: an LSTM cell over the register flags, then a linear read-out."""

    MEMBER_AXIS = True
    """``features`` runs P members at once given weights ``[P, ...]``, inputs ``[P, B, R]`` and state ``[P, B, H]``."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 64):
        super().__init__()
        self.cell = nn.LSTMCell(input_size, hidden_size)
        self.readout = nn.Linear(hidden_size, output_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Zero hidden and cell states, each ``[B, hidden_size]``."""
        weight = self.readout.weight
        zeros = torch.zeros(batch_size, self.cell.hidden_size, dtype=weight.dtype,
                            device=device if device is not None else weight.device)
        return zeros, zeros.clone()

    def features(self, inputs: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """inputs ``[B, R]``, state ``(h, c)`` -> (h ``[B, H]``, new state).

        The cell's equations written out (``nn.LSTMCell``'s, to float rounding) rather than its
        fused kernel, so that a population runs them for all its members at once (``MEMBER_AXIS``).
        """
        h, c = state
        cell = self.cell
        gates = member_linear(inputs, cell.weight_ih, cell.bias_ih) + member_linear(h, cell.weight_hh, cell.bias_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    def readout_weight(self) -> tuple[Tensor, Tensor]:
        """``(weight [num_logits, H], bias [num_logits])`` of the read-out."""
        return self.readout.weight, self.readout.bias

    def forward(self, inputs: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """inputs ``[B, R]``, state ``(h, c)`` -> (logits ``[B, num_logits]``, new state)."""
        h, state = self.features(inputs, state)
        return self.readout(h), state


class TableController(nn.Module):
    """A controller that is a table of logits, one column per pattern of zero flags.

    The flags weigh the 2^R patterns multilinearly: pattern p has register i zero when bit
    R-1-i of p is set (register 0 is the most significant bit), and weight
    ``w_p = prod_i (P(r_i = 0) if register i is zero in p else 1 - P(r_i = 0))``; the logits
    are ``readout.weight @ w + readout.bias``. At sharp flags exactly one column acts, so the
    table is the program the discrete machine runs, and each pattern's choices are parameters
    of their own: at sharp flags, learning what to do when a counter is zero cannot change what
    the machine does while it is not (in an MLP all patterns share the weights). At soft flags
    each column's gradient is scaled by its pattern's weight.
    """

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        if input_size > TABLE_MAX_REGISTERS:
            raise ValueError(f"a table controller has 2^R columns; R = {input_size} registers would give "
                             f"{2 ** input_size:,} (at most {TABLE_MAX_REGISTERS} registers)")
        self.readout = nn.Linear(2 ** input_size, output_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> None:
        """A table carries no state."""
        return None

    def features(self, inputs: Tensor, state: None = None) -> tuple[Tensor, None]:
        """flags ``[B, R]`` -> (pattern weights ``[B, 2^R]``, each row summing to 1, None)."""
        weights = torch.ones_like(inputs[:, :1])
        for register in range(inputs.shape[1]):
            zero = inputs[:, register:register + 1]
            weights = torch.stack([weights * (1 - zero), weights * zero], dim=2).flatten(1)
        return weights, None

    def readout_weight(self) -> tuple[Tensor, Tensor]:
        """``(weight [num_logits, 2^R], bias [num_logits])``: column p is pattern p's logits, less the bias."""
        return self.readout.weight, self.readout.bias

    def forward(self, inputs: Tensor, state: None = None) -> tuple[Tensor, None]:
        """flags ``[B, R]`` -> (logits ``[B, num_logits]``, None)."""
        return self.readout(self.features(inputs)[0]), None


class FeedForwardController(nn.Module):
    """A stateless controller around a network with ``features``, ``readout_weight`` and
    ``readout`` (a dropout MLP from :mod:`nram.layers` or a :class:`nram.gated.GatedMLP`).

    In training mode a batchwise-dropout network's features are compact (only the kept
    units), and ``readout_weight`` returns the matching columns, so the machine never
    computes a dropped unit.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def readout(self) -> nn.Linear:
        """The network's output layer."""
        return self.net.readout

    def readout_weight(self) -> tuple[Tensor, Tensor]:
        """``(weight, bias)`` mapping :meth:`features` to the logits."""
        return self.net.readout_weight()

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw a new dropout pattern (kept for every timestep until the next call), if any."""
        if hasattr(self.net, "resample"):
            self.net.resample(generator)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> None:
        """A feed-forward controller carries no state."""
        return None

    def features(self, inputs: Tensor, state: None = None) -> tuple[Tensor, None]:
        """inputs ``[B, R]`` -> (hidden features ``[B, H or kept]``, None)."""
        return self.net.features(inputs), None

    def forward(self, inputs: Tensor, state: None = None) -> tuple[Tensor, None]:
        """inputs ``[B, R]`` -> (logits ``[B, num_logits]``, None)."""
        return self.net(inputs), None


def make_controller(kind: str, input_size: int, output_size: int, hidden_size: int = 64,
                    dropout: str = "none", dropout_p: float = 0.5, num_layers: int = 2,
                    **options: Any) -> nn.Module:
    """Build a controller (see :data:`CONTROLLER_KINDS`, :data:`DROPOUT_KINDS`).

    ``"mlp"`` with dropout wraps a dropout MLP of rate ``dropout_p``; ``"gated"`` passes
    ``options`` (gating, beta, eps, adaptive) to :class:`nram.gated.GatedMLP`; ``"table"`` has
    2^R columns and no hidden layers, so it ignores ``hidden_size`` and ``num_layers``.
    """
    if kind not in CONTROLLER_KINDS:
        raise ValueError(f"unknown controller {kind!r}; valid controllers are {', '.join(CONTROLLER_KINDS)}")
    if dropout not in DROPOUT_KINDS:
        raise ValueError(f"unknown dropout {dropout!r}; valid: {', '.join(DROPOUT_KINDS)}")
    if dropout != "none" and kind != "mlp":
        raise ValueError(f"dropout={dropout!r} is available for the mlp controller only, not {kind!r}")
    try:
        return _build_controller(kind, input_size, output_size, hidden_size, dropout, dropout_p, num_layers, options)
    except TypeError as error:  # an option the controller does not take
        raise ValueError(f"controller {kind!r} does not take these options {sorted(options)}: {error}") from None


def _build_controller(kind: str, input_size: int, output_size: int, hidden_size: int, dropout: str,
                      dropout_p: float, num_layers: int, options: dict[str, Any]) -> nn.Module:
    if kind == "table":
        return TableController(input_size, output_size, **options)
    if kind == "lstm":
        return LSTMController(input_size, output_size, hidden_size, **options)
    if kind == "gated":
        return FeedForwardController(GatedMLP(input_size, hidden_size, output_size, num_hidden=num_layers,
                                              **options))
    if dropout == "none":
        return MLPController(input_size, output_size, hidden_size, num_layers=num_layers, **options)
    network = BatchwiseDropoutMLP if dropout == "batchwise" else SamplewiseDropoutMLP
    return FeedForwardController(network(input_size, hidden_size, output_size, num_hidden=num_layers,
                                         p=dropout_p, **options))
