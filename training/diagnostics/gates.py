"""Gate adaptation (Lakshminarayanan & Singh 2020): how much a gated network's gates moved.

On a fixed probe set of inputs ``[P, input_size]`` the gates ``G_t`` (all hidden layers,
concatenated: ``[P, L * H]``) are compared with those at step 0:

- ``flipped_fraction = mean 1{(G_t > theta) != (G_0 > theta)}`` (hard on/off flips, theta = 0.5);
- ``mean_soft_change = mean |G_t - G_0|``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _gated_net(model: nn.Module) -> nn.Module:
    """``model`` itself if it has ``gate_values``, else its first submodule that does."""
    for module in model.modules():
        if callable(getattr(module, "gate_values", None)):
            return module
    raise ValueError(f"{type(model).__name__} contains no module with a gate_values(x) method")


class GateAdaptation:
    """Tracks the gates of a gated network (or of the first one inside ``model``) on probe inputs.

    Args:
        model: a module with ``gate_values(x) -> list[[P, H] tensors]`` (e.g.
            :class:`nram.gated.GatedMLP`), or a model containing one (e.g. an NRAM whose
            controller is gated).
        probe_inputs: ``[P, input_size]`` inputs of that network, kept fixed (for the NRAM
            controller: register is-zero probabilities).
        threshold: a gate counts as "on" when ``G > threshold`` (use ``(1 + eps) / 2`` for
            ``(1 + eps) sigmoid`` gates).

    The gates at construction are the step-0 reference; :meth:`state_dict` /
    :meth:`load_state_dict` carry it (and the probes) through a checkpoint, so a resumed run
    keeps measuring against step 0.
    """

    def __init__(self, model: nn.Module, probe_inputs: Tensor, threshold: float = 0.5) -> None:
        self.net = _gated_net(model)
        self.probe_inputs = probe_inputs.detach().clone()
        self.threshold = threshold
        self.initial = self._gates()

    def _gates(self) -> Tensor:
        device = next(self.net.parameters()).device
        gates = self.net.gate_values(self.probe_inputs.to(device))
        return torch.cat([g.reshape(g.shape[0], -1) for g in gates], dim=1)

    def measure(self) -> dict[str, float]:
        """``{"flipped_fraction", "mean_soft_change"}`` of the current gates against step 0."""
        gates = self._gates()
        flipped = (gates > self.threshold) != (self.initial > self.threshold)
        return {"flipped_fraction": flipped.double().mean().item(),
                "mean_soft_change": (gates - self.initial).abs().double().mean().item()}

    def state_dict(self) -> dict[str, Tensor | float]:
        """Probes, step-0 gates and threshold, as plain tensors (``torch.load(weights_only=True)``-safe)."""
        return {"probe_inputs": self.probe_inputs.cpu(), "initial": self.initial.cpu(),
                "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Tensor | float]) -> None:
        """Restore what :meth:`state_dict` returned (step-0 gates kept on the network's device)."""
        device = next(self.net.parameters()).device
        self.probe_inputs = state["probe_inputs"].clone()
        self.initial = state["initial"].to(device)
        self.threshold = float(state["threshold"])

    def log(self, writer, step: int) -> dict[str, float]:
        """Measure and write ``gates/flipped_fraction``, ``gates/mean_soft_change`` to a
        ``torch.utils.tensorboard.SummaryWriter`` at ``step``; returns the measurement."""
        values = self.measure()
        for name, value in values.items():
            writer.add_scalar(f"gates/{name}", value, step)
        return values
