"""The ``[search]`` table of a config: which settings ``nram search`` samples, and from what.

Each key is a :class:`training.config.TrainConfig` setting; its value says how to sample it:

    [search]
    lr = { low = 1e-4, high = 1e-2, log = true }      # float, log-uniform
    gradient_noise = { low = 0.0, high = 1.0 }        # float, uniform
    num_registers = { low = 3, high = 6 }             # integers low..high (both ints)
    hidden_size = { low = 32, high = 128, step = 32 } # every 32th
    optimizer = ["adam", "sgd"]                       # one of these

Every other setting keeps the config's value. A malformed table is a ``ValueError`` naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from training.config import TrainConfig

UNSEARCHABLE = ("task", "seed", "steps", "device", "threads", "stop_when_solved", "log_every", "eval_every",
                "checkpoint_every", "eval_examples")
"""Settings a trial never samples: what the task is, how long a trial runs and how it is watched."""


@dataclass(frozen=True)
class Parameter:
    """One searched setting: ``choices`` for a categorical one, else ``low..high`` (``log``, ``step``)."""

    name: str
    choices: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    @property
    def is_int(self) -> bool:
        """Whether the range holds integers (both bounds are)."""
        return not self.choices and _is_int(self.low) and _is_int(self.high)

    def suggest(self, trial: Any) -> Any:
        """This setting's value for an Optuna ``trial``."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step) if self.step else 1)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def search_space(table: Any, source: str = "[search]") -> list[Parameter]:
    """The parameters of a ``[search]`` table (see the module docstring); ``ValueError`` if malformed."""
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{source}: needs a [search] table with at least one setting to sample")
    settings = {f.name for f in dataclasses.fields(TrainConfig)}
    parameters = []
    for name, spec in table.items():
        where = f"{source}: {name}"
        if name not in settings:
            raise ValueError(f"{where} is not a setting; searchable settings are "
                             f"{', '.join(sorted(settings - set(UNSEARCHABLE)))}")
        if name in UNSEARCHABLE:
            raise ValueError(f"{where} cannot be searched (a trial's length, task and logging are fixed)")
        if isinstance(spec, list):
            if not spec or len(set(map(repr, spec))) != len(spec):
                raise ValueError(f"{where}: a list of choices must be non-empty and without repeats, got {spec!r}")
            parameters.append(Parameter(name, choices=tuple(spec)))
            continue
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: give a list of choices or a table {{ low = .., high = .. }}, got {spec!r}")
        unknown = sorted(set(spec) - {"low", "high", "log", "step"})
        if unknown or "low" not in spec or "high" not in spec:
            raise ValueError(f"{where}: a range takes low, high and optionally log and step, got {sorted(spec)}")
        low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        if not (_is_number(low) and _is_number(high)) or not low < high:
            raise ValueError(f"{where}: low and high must be numbers with low < high, got {low!r} and {high!r}")
        if not isinstance(log, bool) or (log and low <= 0):
            raise ValueError(f"{where}: log must be true or false, and a log range needs low > 0")
        if step is not None and (not _is_number(step) or step <= 0 or log):
            raise ValueError(f"{where}: step must be a number > 0, and a log range takes none")
        parameters.append(Parameter(name, low=low, high=high, log=log, step=step))
    return parameters


def trial_config(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``base`` with the sampled ``values``; a run that stops at its first exact check. A
    combination the config rejects (say R too small for a gate) is a ``ValueError``."""
    return TrainConfig.from_dict({**base.to_dict(), **values, "stop_when_solved": True}, source="trial")
