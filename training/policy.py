"""A trained NRAM as a gymnasium policy: the controller drives ``nram/<Task>-v0``.

The env's observation is exactly what the controller sees (the register is-zero flags) and
its action is every choice the controller makes, so a checkpoint scores the same in the env
as the discrete machine does under ``nram eval --discrete``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import tasks  # noqa: F401  (registers the environments)
from nram.model import NRAM
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.config import TrainConfig


class ControllerPolicy:
    """Acts with an NRAM's controller: every choice its argmax, stop when ``f_t > 0.5``.

    Call :meth:`reset` at the start of each episode (the LSTM controller keeps state), then
    ``policy(observation) -> action`` with observation ``MultiBinary(R)`` and the action a
    ``MultiDiscrete`` vector in :class:`nram.circuit.CircuitLayout` order, stop bit last.
    """

    def __init__(self, model: NRAM, config: TrainConfig | None = None):
        self.model = model.eval()
        self.config = config
        """The run's config, when the policy comes from a checkpoint: the machine it was trained at."""
        self.readout = None
        self.state: Any = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "ControllerPolicy":
        """The controller of a checkpoint written by ``nram train``, with its config."""
        model, config = model_from_checkpoint(load_checkpoint(path, map_location=device), device)
        return cls(model, config)

    def make_env(self, length: int, **kwargs: Any) -> gym.Env:
        """The task's env ``nram/<Task>-v0`` at length n on the machine this policy was trained and
        evaluated at: its registers and gates, memory M(n) and ``max_steps`` T(n), so an episode
        scores what ``nram eval --discrete`` does. ``kwargs`` go to ``gym.make`` (e.g. render_mode)."""
        if self.config is None:
            raise ValueError("make_env needs the run's config: build the policy with ControllerPolicy.from_checkpoint")
        config, layout = self.config, self.model.layout
        title = tasks.get_task(config.task).title
        settings = dict(length=length, memory_size=config.memory_size_for(length),
                        num_registers=layout.num_registers, gates=layout.gates,
                        max_steps=config.timesteps_for(length))
        return gym.make(f"nram/{title}-v0", **{**settings, **kwargs})

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
