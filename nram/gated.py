"""Deep gated networks (Lakshminarayanan & Singh 2020): hidden units output ``q * G``.

A gated MLP with ``L = num_hidden`` hidden layers of width H. The *value network* computes
pre-activations and passes gated values on::

    q_l = W_l z_{l-1} + b_l,   z_l = q_l * G_l   (z_0 = x: [..., input_size], q_l, G_l: [..., H])
    y   = W_{L+1} z_L + b_{L+1}                  ([..., output_size])

The gates ``G_l`` come from (``gating=``):

- ``"hard"``: ``G_l = 1{q_l > 0}``; with the gates tied to the value weights this is exactly
  the ReLU MLP ``z_l = relu(q_l)``.
- ``"soft"``: ``G_l = (1 + eps) sigmoid(beta q_l)`` (``beta -> inf``, ``eps = 0`` recovers ReLU;
  the sister paper's code uses ``beta = 4``, ``eps = 0.1``). Gradients flow through ``G`` too.
- ``"decoupled"``: a separate *gating network* with its own weights ``V_l, c_l`` and the same
  widths, fed the same input: ``r_l = V_l f_{l-1} + c_l``, ``f_l = r_l * G_l``, ``f_0 = x``,
  ``G_l = (1 + eps) sigmoid(beta r_l)`` (or ``1{r_l > 0}`` for ``beta = inf``; hard gates pass
  no gradient to ``V``). The value network is then linear given the gates.

Gating weights are *adaptive* (trained) or *frozen* (``adaptive=False``, decoupled only:
``requires_grad=False``, so optimizers never move them), from a random init or copied from a
trained network with :meth:`GatedMLP.load_gating`.

Path view (biases off): ``y_o = sum_p phi_x(p) v(p)`` over paths ``p = (p_0, p_1..p_L, o)``
with ``phi_x(p) = x[p_0] prod_l G_l[p_l]`` and ``v(p)`` the product of the value weights along
``p``. Value layers are named ``layers.0 .. layers.L`` as in the dropout MLPs of
:mod:`nram.layers`, so a ReLU MLP's state dict loads into ``gating="hard"`` unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

GATINGS: tuple[str, ...] = ("hard", "soft", "decoupled")


class GatedMLP(nn.Module):
    """Deep gated network; see the module docstring for the math.

    Args:
        input_size, hidden_size, output_size: widths; ``num_hidden`` gated hidden layers.
        gating: ``"hard"``, ``"soft"`` or ``"decoupled"``.
        beta: gate sharpness of soft and decoupled gates; ``math.inf`` gives hard steps.
        eps: soft gates are ``(1 + eps) sigmoid(beta q)``.
        adaptive: train the gating network (False: frozen; decoupled only).
        bias: biases in the value and gating layers.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_hidden: int = 2,
                 gating: str = "hard", beta: float = 4.0, eps: float = 0.0, adaptive: bool = True,
                 bias: bool = True) -> None:
        super().__init__()
        if gating not in GATINGS:
            raise ValueError(f"unknown gating {gating!r}; valid: {', '.join(GATINGS)}")
        if num_hidden < 1:
            raise ValueError(f"num_hidden must be >= 1, got {num_hidden}")
        if not beta > 0 or eps < 0:
            raise ValueError(f"need beta > 0 and eps >= 0, got beta={beta}, eps={eps}")
        if not adaptive and gating != "decoupled":
            raise ValueError("frozen gates need gating='decoupled' (tied gates move with the value weights)")
        self.gating, self.beta, self.eps, self.num_hidden = gating, beta, eps, num_hidden
        sizes = [input_size] + [hidden_size] * num_hidden
        self.layers = nn.ModuleList([nn.Linear(a, b, bias=bias) for a, b in zip(sizes[:-1], sizes[1:])]
                                    + [nn.Linear(hidden_size, output_size, bias=bias)])
        gating_sizes = zip(sizes[:-1], sizes[1:]) if gating == "decoupled" else []
        self.gating_layers = nn.ModuleList([nn.Linear(a, b, bias=bias) for a, b in gating_sizes])
        self.gating_layers.requires_grad_(adaptive)

    @property
    def adaptive(self) -> bool:
        """Whether the gates are trained (always True for tied gating)."""
        return all(p.requires_grad for p in self.gating_layers.parameters())

    def gate(self, q: Tensor) -> Tensor:
        """Gate values from gating pre-activations: ``1{q > 0}`` or ``(1 + eps) sigmoid(beta q)``."""
        if self.gating == "hard" or math.isinf(self.beta):
            return (q > 0).to(q.dtype)
        return (1.0 + self.eps) * torch.sigmoid(self.beta * q)

    def _hidden(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The last hidden layer ``z_L [..., H]`` and the gates ``G_1..G_L``, each ``[..., H]``."""
        gates, f = [], x
        for i in range(self.num_hidden):
            q = self.layers[i](x)
            if self.gating == "decoupled":
                r = self.gating_layers[i](f)
                g = self.gate(r)
                f = r * g
            else:
                g = self.gate(q)
            x = q * g
            gates.append(g)
        return x, gates

    @property
    def readout(self) -> nn.Linear:
        """The output layer ``layers[-1]`` (hidden -> output)."""
        return self.layers[-1]

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer ``z_L``: ``x: [..., input_size] -> [..., H]``."""
        return self._hidden(x)[0]

    def readout_weight(self) -> tuple[Tensor, Tensor | None]:
        """``(weight [output, H], bias [output])``, so that
        ``forward(x) == F.linear(features(x), *readout_weight())``."""
        return self.readout.weight, self.readout.bias

    def forward(self, x: Tensor) -> Tensor:
        """``x: [..., input_size] -> [..., output_size]``."""
        return self.readout(self.features(x))

    @torch.no_grad()
    def gate_values(self, x: Tensor) -> list[Tensor]:
        """The gates ``G_l`` for input ``x [..., input_size]``: a list of L tensors ``[..., H]``, no grad."""
        return self._hidden(x)[1]

    @torch.no_grad()
    def load_gating(self, source: nn.Module | Mapping[str, Tensor]) -> None:
        """Copy the gating network's weights from ``source`` (decoupled gating only).

        ``source``: a :class:`GatedMLP` (its gate-producing layers: ``gating_layers`` if
        decoupled, else its first L value layers); any other module (its first L
        ``nn.Linear`` layers in module order, e.g. a trained ReLU MLP, whose on/off pattern
        then becomes these hard gates); or a state dict (``gating_layers.*`` entries if
        present, else the first L 2-D ``*weight`` entries in order, with their ``*bias``).
        Shapes must match. ``requires_grad`` is kept (frozen stays frozen).
        """
        if self.gating != "decoupled":
            raise ValueError("load_gating needs gating='decoupled'")
        pairs = _linear_pairs(source)[:self.num_hidden]
        if len(pairs) < self.num_hidden:
            raise ValueError(f"source has {len(pairs)} linear layers, need {self.num_hidden}")
        for layer, (weight, bias) in zip(self.gating_layers, pairs):
            if weight.shape != layer.weight.shape or (bias is None) != (layer.bias is None):
                raise ValueError(f"gating layer {tuple(layer.weight.shape)} (bias {layer.bias is not None}) "
                                 f"cannot take weight {tuple(weight.shape)} (bias {bias is not None})")
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)

    def extra_repr(self) -> str:
        return f"gating={self.gating!r}, beta={self.beta}, eps={self.eps}, adaptive={self.adaptive}"


def _linear_pairs(source: nn.Module | Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor | None]]:
    """``(weight, bias)`` of the layers :meth:`GatedMLP.load_gating` copies from, in order."""
    if isinstance(source, GatedMLP):
        layers = source.gating_layers if source.gating == "decoupled" else source.layers[:source.num_hidden]
        return [(m.weight, m.bias) for m in layers]
    if isinstance(source, nn.Module):
        return [(m.weight, m.bias) for m in source.modules() if isinstance(m, nn.Linear)]
    keys = [k for k in source if k.startswith("gating_layers.")] or list(source)
    return [(source[k], source.get(k[:-len("weight")] + "bias"))
            for k in keys if k.endswith("weight") and source[k].ndim == 2]
