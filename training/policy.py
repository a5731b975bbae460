"""A trained NRAM as a gymnasium policy: the controller drives ``nram/<Task>-v0``.

The env's observation is exactly what the controller sees (the register is-zero flags) and
its action is every choice the controller makes, so a checkpoint scores the same in the env
as the discrete machine does under ``nram eval --discrete``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nram.model import NRAM


class ControllerPolicy:
    """Acts with an NRAM's controller: every choice its argmax, stop when ``f_t > 0.5``.

    Call :meth:`reset` at the start of each episode (the LSTM controller keeps state), then
    ``policy(observation) -> action`` with observation ``MultiBinary(R)`` and the action a
    ``MultiDiscrete`` vector in :class:`nram.circuit.CircuitLayout` order, stop bit last.
    """

    def __init__(self, model: NRAM):
        self.model = model.eval()
        self.readout = None
        self.state: Any = None

    @torch.no_grad()
    def reset(self) -> None:
        """Start a new episode: fresh controller state."""
        device = next(self.model.parameters()).device
        self.readout = self.model.readout()
        self.state = self.model.controller.initial_state(1, device)

    @torch.no_grad()
    def __call__(self, observation: np.ndarray) -> np.ndarray:
        """One step: is-zero flags ``[R]`` -> action ``[num_slots + 1]`` (int64)."""
        if self.readout is None:
            self.reset()
        flags = torch.as_tensor(np.asarray(observation), dtype=self.model.dtype,
                                device=self.readout[0].device)[None]
        choices, stop_logit, self.state = self.model.step_logits(flags, self.state, self.readout)
        action = torch.cat([choices.argmax(-1)[0], (stop_logit > 0).long()])
        return action.cpu().numpy().astype(np.int64)
