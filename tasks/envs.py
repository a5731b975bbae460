"""Gymnasium environments: the discrete NRAM machine, with the agent as its controller.

``import tasks`` registers ``nram/<Title>-v0`` for every task (``nram/Copy-v0``,
``nram/ListK-v0``, ...); each is :class:`NRAMEnv` with its ``task`` preset. Every step runs
one timestep of the integer machine (:func:`nram.discrete.discrete_step`) with the circuit
the action chooses.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from nram.circuit import CircuitLayout
from nram.discrete import discrete_step, split_choices
from nram.gates import GATE_ARITY, GATE_NAMES
from tasks.base import TaskBatch, cell_accuracy
from tasks.registry import TASK_CLASSES, get_task

OBSERVATION_KINDS = ("flags", "full")
"""``"flags"``: register is-zero flags only (what an NRAM controller sees); ``"full"``: plus registers and memory."""


class NRAMEnv(gym.Env):
    """The discrete Neural Random-Access Machine running one task example per episode.

    ## Description

    The memory starts as a task example (:meth:`tasks.base.Task.sample`): ``M`` cells holding
    integers in ``0..M-1``. The ``R`` registers start at 0. At every step the agent plays the
    NRAM controller: it wires the gates' inputs, chooses each register's next value and
    decides whether to stop. Gates run in order (READ sees memory before this step's WRITE;
    WRITE(p, a) stores a at p and outputs 0), then all registers are replaced at once.

    ## Action Space

    ``MultiDiscrete``, one entry per choice, in the order of :class:`nram.circuit.CircuitLayout`:
    for gate i (its position in ``gates``), each of its ``GATE_ARITY`` inputs picks one of
    ``R + i`` sources (registers ``r_0..r_{R-1}``, then the outputs ``o_0..o_{i-1}``); then each
    register picks one of ``R + Q`` sources (old registers, then all Q gate outputs); last, the
    stop bit in {0, 1}. :meth:`encode_action` builds actions from names.

    ## Observation Space

    ``observation="flags"`` (default): ``MultiBinary(R)``, 1 where a register holds 0.
    ``observation="full"``: ``Dict(is_zero=MultiBinary(R), registers=MultiDiscrete([M] * R),
    memory=MultiDiscrete([M] * M))``; M is then fixed when the environment is made.

    ## Starting State

    A fresh example of the task at ``length`` n in ``memory_size`` M cells; registers 0.
    ``info`` carries ``memory`` and ``registers`` (int64 arrays), ``target`` and ``mask``
    (the desired final memory and the scored cells) and ``step``.

    ## Rewards

    At the last step of an episode, the fraction of scored cells that hold their target
    (1.0 = solved); 0 at every other step.

    ## Episode End

    Terminated after the step whose stop bit is 1 (that step's circuit still runs).
    Truncated after ``max_steps`` steps.

    ## Arguments

    ``gymnasium.make("nram/Copy-v0", length=4, memory_size=None, num_registers=4,
    gates=GATE_NAMES, max_steps=None, observation="flags", render_mode=None)``.
    ``memory_size=None`` uses the smallest memory that fits the length; ``max_steps=None``
    allows ``2 * M`` steps. ``reset(options={"length": n, "memory_size": M})`` changes both
    for one episode (M only where ``observation="flags"``); given only a length, M grows
    to fit it if needed.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, task: str = "copy", length: int = 4, memory_size: int | None = None,
                 num_registers: int = 4, gates: Sequence[str] = GATE_NAMES, max_steps: int | None = None,
                 observation: str = "flags", render_mode: str | None = None):
        self.task = get_task(task)
        self.layout = CircuitLayout(num_registers, tuple(gates))
        if observation not in OBSERVATION_KINDS:
            raise ValueError(f"observation must be one of {OBSERVATION_KINDS}, got {observation!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        memory_size = memory_size if memory_size is not None else self.task.min_memory_size(length)
        _, self.length, self.memory_size = self.task.check_sizes(1, length, memory_size)
        self.max_steps = max_steps
        self.observation = observation
        self.render_mode = render_mode
        self.action_space = spaces.MultiDiscrete(self.layout.action_nvec())
        flags = spaces.MultiBinary(num_registers)
        if observation == "flags":
            self.observation_space = flags
        else:
            self.observation_space = spaces.Dict({
                "is_zero": flags,
                "registers": spaces.MultiDiscrete([self.memory_size] * num_registers),
                "memory": spaces.MultiDiscrete([self.memory_size] * self.memory_size),
            })
        self.batch: TaskBatch | None = None
        """The episode's example as a batch of one (``memory`` is the initial memory)."""
        self.memory = torch.zeros(1, self.memory_size, dtype=torch.long)
        self.registers = torch.zeros(1, num_registers, dtype=torch.long)
        self.episode_length = length
        self.steps_taken = 0
        self.episode_steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Start an episode on a new example; ``options`` may set ``length`` and ``memory_size``."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"length", "memory_size"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; valid: 'length', 'memory_size'")
        length = options.get("length", self.length)
        if "memory_size" in options:
            memory_size = options["memory_size"]
        elif self.observation == "full" or "length" not in options:
            memory_size = self.memory_size
        else:
            memory_size = max(self.memory_size, self.task.min_memory_size(length))
        if self.observation == "full" and memory_size != self.memory_size:
            raise ValueError(f"with observation='full' the memory size is fixed at {self.memory_size}, "
                             f"got memory_size {memory_size}")
        generator = torch.Generator().manual_seed(int(self.np_random.integers(2**63 - 1)))
        self.batch = self.task.sample(1, length, memory_size, generator)
        self.memory = self.batch.memory
        self.episode_length = length
        self.registers = torch.zeros(1, self.layout.num_registers, dtype=torch.long)
        self.steps_taken = 0
        self.episode_steps = self.max_steps if self.max_steps is not None else 2 * memory_size
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        """Run one machine step with the circuit ``action`` chooses."""
        if self.batch is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action)
        whole = action.dtype.kind in "iub" or (action.dtype.kind == "f" and bool(np.all(action == np.round(action))))
        if not whole or not self.action_space.contains(action.astype(self.action_space.dtype, copy=False)):
            raise ValueError(f"invalid action {action!r}: whole numbers, each below {self.action_space.nvec.tolist()}")
        choices = torch.as_tensor(action[:-1], dtype=torch.long)[None]
        gate_inputs, register_sources = split_choices(choices, self.layout)
        self.memory, self.registers, _ = discrete_step(self.memory, self.registers, gate_inputs,
                                                       register_sources, self.layout.gates)
        self.steps_taken += 1
        terminated = bool(action[-1] == 1)
        truncated = not terminated and self.steps_taken >= self.episode_steps
        reward = float(cell_accuracy(self.memory, self.batch)[0]) if terminated or truncated else 0.0
        return self._observation(), reward, terminated, truncated, self._info()

    def render(self) -> str | None:
        """``render_mode="ansi"``: the step, registers, memory and the scored targets as text."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the env with render_mode='ansi'")
            return None
        if self.batch is None:
            return "(not reset)"
        cells = self.memory[0].tolist()
        target = [str(t) if scored else "." for t, scored in zip(self.batch.target[0].tolist(),
                                                                 self.batch.mask[0].tolist())]
        width = max(len(str(self.memory.shape[1] - 1)), 1)
        registers = " ".join(f"r{i}={v}" for i, v in enumerate(self.registers[0].tolist()))
        return (f"{self.task.title} n={self.episode_length} M={len(cells)} "
                f"step {self.steps_taken}/{self.episode_steps}\n"
                f"registers {registers}\n"
                f"memory    {' '.join(f'{c:>{width}}' for c in cells)}\n"
                f"target    {' '.join(f'{t:>{width}}' for t in target)}\n")

    def encode_action(self, gate_inputs: Mapping[str, Sequence[int | str]] | None = None,
                      register_sources: Mapping[int, int | str] | None = None, stop: bool = False) -> np.ndarray:
        """An action from named choices.

        ``gate_inputs`` maps a gate name to its inputs; ``register_sources`` maps a register
        index to its next value. A source is an index into the choice's options or a name:
        ``"r<i>"`` for register i, a gate name for that gate's output. Gates not named take
        option 0 (r_0) for every input (mind WRITE); registers not named keep their value.
        """
        num_registers, gates = self.layout.num_registers, self.layout.gates
        action = np.zeros(len(self.action_space.nvec), dtype=self.action_space.dtype)
        for name, inputs in (gate_inputs or {}).items():
            if name not in gates or len(inputs) != GATE_ARITY[name]:
                raise ValueError(f"gate {name!r} is not in {gates} or does not take {len(inputs)} inputs")
            first = self.layout.first_slot[gates.index(name)]
            action[first:first + len(inputs)] = [self._source(s, num_registers + gates.index(name)) for s in inputs]
        register_slots = len(self.layout.input_slots)
        action[register_slots:register_slots + num_registers] = np.arange(num_registers)
        for register, source in (register_sources or {}).items():
            if isinstance(register, bool) or not isinstance(register, (int, np.integer)) \
                    or not 0 <= register < num_registers:
                raise ValueError(f"register_sources: no register {register!r}; registers are 0..{num_registers - 1}")
            action[register_slots + register] = self._source(source, self.layout.num_sources)
        action[-1] = int(stop)
        return action

    def _source(self, source: int | str, num_options: int) -> int:
        """Index of ``source`` (an index, ``"r<i>"`` or a gate name) among the first ``num_options`` sources."""
        if isinstance(source, str):
            if source in self.layout.gates:
                index = self.layout.num_registers + self.layout.gates.index(source)
            elif source.startswith("r") and source[1:].isdigit():
                index = int(source[1:])
            else:
                raise ValueError(f"unknown source {source!r}: use 'r<i>' or one of {self.layout.gates}")
        else:
            index = int(source)
        if not 0 <= index < num_options:
            raise ValueError(f"source {source!r} is not available here (only the first {num_options} sources are)")
        return index

    def _observation(self) -> Any:
        is_zero = (self.registers[0] == 0).numpy().astype(np.int8)
        if self.observation == "flags":
            return is_zero
        return {"is_zero": is_zero, "registers": self.registers[0].numpy().astype(np.int64),
                "memory": self.memory[0].numpy().astype(np.int64)}

    def _info(self) -> dict[str, Any]:
        assert self.batch is not None
        return {"memory": self.memory[0].numpy().copy(), "registers": self.registers[0].numpy().copy(),
                "target": self.batch.target[0].numpy().copy(), "mask": self.batch.mask[0].numpy().copy(),
                "step": self.steps_taken}


def register_envs() -> None:
    """Register ``nram/<Title>-v0`` for every task (idempotent)."""
    for name, cls in TASK_CLASSES.items():
        env_id = f"nram/{cls.title}-v0"
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="tasks.envs:NRAMEnv", kwargs={"task": name})
