"""TrainConfig: every setting of a training run, with the paper's choices as defaults.

A config is plain data: ``dataclasses.asdict(config)`` goes into checkpoints and TensorBoard,
and a TOML file (``training/configs/<task>.toml``) or command-line flags override the defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from importlib import resources
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import torch

from nram.model import NRAM, MachineConfig
from tasks import get_task


FINITE_SETTINGS = ("lr", "weight_decay", "momentum", "clip_value", "clip_norm", "gradient_noise", "entropy_bonus",
                   "entropy_decay", "log_eps", "promote_below", "dropout_p", "restart_above", "timesteps_per_length",
                   "exploit_fraction", "exploit_fresh", "gumbel_temperature", "timesteps_jitter")
"""Float settings that must not be inf or NaN (NaN would silently switch a feature off)."""
NON_NEGATIVE_SETTINGS = ("steps", "memory_extra", "timesteps", "timesteps_per_length", "weight_decay", "momentum",
                         "clip_value", "clip_norm", "gradient_noise", "entropy_bonus", "gumbel_temperature",
                         "timesteps_jitter", "threads", "restart_every", "exploit_every")
"""Settings that must be >= 0 (threads 0: torch's default; every-N settings 0: never)."""
AT_LEAST_ONE_SETTINGS = ("batch_size", "nan_patience", "population", "log_every", "eval_every", "image_every",
                         "checkpoint_every", "eval_examples")
"""Counts that must be >= 1."""
RANGED_SETTINGS = ("lr", "weight_decay", "gradient_noise", "entropy_bonus", "gumbel_temperature")
"""Settings a population may draw per member (``TrainConfig.population_ranges``)."""


@dataclass
class TrainConfig:
    """How to train one NRAM on one task."""

    task: str = "copy"
    """Task name, one of tasks.TASK_NAMES."""
    seed: int = 0
    """Seeds the model's initial weights, the batches, the gradient noise and the optimizer's directions."""
    steps: int = 5000
    """Number of optimizer steps."""
    batch_size: int = 32
    """Examples per step."""

    min_length: int = 1
    """Shortest training input (the curriculum's first level)."""
    max_length: int = 6
    """Longest training input (the curriculum's last level)."""
    curriculum: str = "zaremba"
    """"zaremba" (Zaremba & Sutskever 2015: 10% all levels, 25% up to level+e, 65% level+e) or "fixed" (uniform)."""
    promote_below: float = 0.05
    """The curriculum moves to the next level when the per-cell error at its level falls below this."""
    memory_extra: int = 0
    """Cells beyond the task's minimum: M(n) = task.min_memory_size(n) + memory_extra."""
    batch_by_length: bool = True
    """Train each length in a batch at its own M(n) and T(n), as evaluation runs it (one rollout
    per length); false runs the whole batch at the M and T of its longest input (one rollout)."""
    timesteps: int = 2
    """T(n) = timesteps + timesteps_per_length * n: how many steps the machine runs on a length-n input."""
    timesteps_per_length: float = 1.0
    """See timesteps."""

    num_registers: int = 4
    """R, the machine's registers."""
    gates: list[str] = field(default_factory=list)
    """The gates, in paper order; empty means all 14."""
    controller: str = "mlp"
    """Controller kind: "mlp", "lstm", "gated" (deep gated network) or "table" (one column of logits per
    pattern of register zero flags, :class:`nram.controller.TableController`)."""
    hidden_size: int = 64
    """Width of the controller's hidden layers (a table has none: its width is 2^R)."""
    dropout: str = "none"
    """Dropout in the mlp controller: "none", "batchwise" (Graham et al. 2015: one pattern per rollout) or "samplewise"."""
    dropout_p: float = 0.5
    """Dropout rate."""
    controller_options: dict[str, Any] = field(default_factory=dict)
    """Extra controller arguments, e.g. {"gating": "decoupled", "adaptive": false} for "gated"."""

    optimizer: str = "adam"
    """"adam", "sgd", "rbd" (random-bases descent) or "fpd" (fixed-projection descent)."""
    lr: float = 0.01
    """Learning rate."""
    weight_decay: float = 0.0
    """L2 weight decay passed to the optimizer."""
    momentum: float = 0.0
    """Momentum (sgd only)."""
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    """Extra optimizer arguments, e.g. {"dims": 250, "compartments": "module"} for rbd."""
    clip_value: float = 10.0
    """Each gradient element is clipped to [-clip_value, clip_value] (0 disables)."""
    clip_norm: float = 30.0
    """Then the whole gradient is rescaled to at most this norm (0 disables)."""
    gradient_noise: float = 0.01
    """eta of the annealed gradient noise N(0, eta / (1 + step)^0.55) (Neelakantan et al. 2015); 0 disables."""
    noise_relative: bool = False
    """Scale the noise to the gradient: its expected norm is sqrt(eta / (1 + step)^0.55) times the
    clipped gradient's norm (so with eta <= 1 never larger than the gradient), instead of a fixed
    per-element variance. Either way the noise stops while the last check found the run exact."""
    entropy_bonus: float = 0.0
    """Initial weight of the choice-entropy bonus subtracted from the loss; 0 disables."""
    entropy_decay: float = 0.999
    """The entropy bonus is multiplied by this after every step."""
    timesteps_jitter: float = 0.0
    """Train programs that halt: a training rollout of length n runs T(n) + J steps, J =
    ceil(timesteps_jitter * T(n)), and each example must stop by its own horizon, drawn uniformly
    from T(n)..T(n) + J (the probability left at its horizon stops there). An answer that is right
    only at step T(n) then scores worse than one that holds once found, as a halting program's
    does. The entropy bonus still counts every step of the rollout. Checks, evaluation and
    reports run T(n). 0 (the default): every training example stops by T(n). Not with the
    one-call C rollout, which it turns off."""
    gumbel_temperature: float = 0.0
    """Train on sampled programs: every choice of a training rollout mixes by the Gumbel-softmax
    ``softmax((logits + g) / tau)`` with fresh Gumbel noise g per example and step and tau this
    temperature (Jang et al. 2017), instead of ``softmax(logits)``. A mixture of programs then
    scores only as well as the programs it samples, so what training rewards is what the
    discrete machine (argmax, the most likely program) runs. 0 (the default) trains the plain
    soft machine; evaluation never adds noise."""
    check_discrete: bool = False
    """Checks (solved, restarts, a population's ranking) score each training length by the worse
    of the soft and the discrete machine's per-cell error, so only a run whose discretised
    program is exact counts as solved, and a population keeps programs over soft mixtures."""
    log_eps: float = 1e-6
    """Likelihoods are clamped to at least this before the logarithm."""
    nan_patience: int = 20
    """Consecutive steps with a NaN or infinite loss or gradient after which training aborts."""
    restart_every: int = 0
    """Restarts (the paper's many restarts, within one run): every this many steps after a
    (re)start, a run whose per-cell error over all its training lengths is above
    ``restart_above`` starts again from fresh weights and optimizer state; 0 never checks.
    Whether a run restarts depends only on its past, not on ``steps`` (so ``--resume`` with
    more steps continues exactly): a ``steps`` that is not a multiple of this cuts the last
    attempt short."""
    restart_above: float = 0.0
    """See restart_every."""
    stop_when_solved: bool = False
    """End the run at the first check (every eval_every and every restart_every steps) that
    finds its error at or below restart_above, instead of training on; ``steps`` then bounds
    all attempts together. A run that ended so stays ended when resumed."""

    population: int = 1
    """Members trained side by side as one vectorised model (``nram train --population P``):
    member i has seed ``seed + i`` and its own batches, noise, optimizer state, curriculum and
    restarts. 1 is one ordinary run."""
    population_ranges: dict[str, list[float]] = field(default_factory=dict)
    """Per-member hyperparameters drawn log-uniformly from ``[low, high]``, e.g. {"lr": [0.001,
    0.01]}; keys among lr, weight_decay, gradient_noise, entropy_bonus, gumbel_temperature. Member 0 keeps the
    config's own values."""
    exploit_every: int = 0
    """Population-based training: every this many steps the worst ``exploit_fraction`` of the
    members (by error over the training lengths) are replaced: a share ``exploit_fresh`` of them
    by fresh weights, the others by a copy of a random member of the best ``exploit_fraction``
    with each ranged hyperparameter multiplied by 0.8 or 1.25; 0 never."""
    exploit_fraction: float = 0.25
    """See exploit_every."""
    exploit_fresh: float = 0.5
    """Share of the members replaced at an exploitation that start again from fresh weights
    (``floor(count * exploit_fresh)`` of the ``count`` replaced); the rest copy a better member.
    0.5 alternates the two; 0 is population-based training's truncation selection alone, which
    spends every replacement on the best lineages."""

    log_every: int = 50
    """Steps between scalar logs (loss, error, grad norm, lr, curriculum level)."""
    eval_every: int = 500
    """Steps between evaluations by length (the memory heatmaps go with some, see image_every)."""
    image_every: int = 1000
    """Memory heatmaps go to TensorBoard with the first evaluation at or after every multiple of
    this many steps, and with the last one (drawn on a background thread, about 0.15 s each on a CPU)."""
    eval_examples: int = 256
    """Examples per length in those evaluations."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end and on Ctrl-C)."""
    device: str = "cpu"
    """"cpu", "cuda" or "cuda:N"."""
    threads: int = 0
    """CPU threads for torch (0: torch's default). One thread is often fastest at small batches."""

    def machine_config(self) -> MachineConfig:
        """The model's architecture as a MachineConfig."""
        options = {"gates": tuple(self.gates)} if self.gates else {}
        return MachineConfig(num_registers=self.num_registers, controller=self.controller,
                             hidden_size=self.hidden_size, dropout=self.dropout, dropout_p=self.dropout_p,
                             controller_options=dict(self.controller_options), **options)

    def memory_size_for(self, length: int) -> int:
        """M(n) = task.min_memory_size(n) + memory_extra: memory grows with the input."""
        return get_task(self.task).min_memory_size(length) + self.memory_extra

    def timesteps_for(self, length: int) -> int:
        """T(n) = timesteps + ceil(timesteps_per_length * n)."""
        return self.timesteps + math.ceil(self.timesteps_per_length * length)

    def training_timesteps_for(self, length: int) -> int:
        """How many steps a training rollout of length n runs: T(n) + ceil(timesteps_jitter * T(n))."""
        steps = self.timesteps_for(length)
        return steps + math.ceil(self.timesteps_jitter * steps)

    def train_lengths(self) -> list[int]:
        """Every training length, min_length..max_length."""
        return list(range(self.min_length, self.max_length + 1))

    def report_lengths(self) -> list[int]:
        """1x, 2x and 4x the longest training length: where a run's generalisation is reported
        (the final table of ``nram train``, ``nram eval``'s default, ``scripts/reproduce_table.py``)."""
        return [self.max_length, 2 * self.max_length, 4 * self.max_length]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting of the wrong type or out of range."""
        self._validate_types()
        finite = [name for name in FINITE_SETTINGS if not math.isfinite(getattr(self, name))]
        if finite:
            raise ValueError(f"{finite[0]} must be a finite number, got {getattr(self, finite[0])}")
        for name in NON_NEGATIVE_SETTINGS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in AT_LEAST_ONE_SETTINGS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        checks = [
            (1 <= self.min_length <= self.max_length,
             f"need 1 <= min_length <= max_length, got {self.min_length} and {self.max_length}"),
            (self.curriculum in ("zaremba", "fixed"), f"curriculum must be 'zaremba' or 'fixed', got {self.curriculum!r}"),
            (self.timesteps_for(self.min_length) >= 1,
             f"timesteps and timesteps_per_length give T({self.min_length}) = {self.timesteps_for(self.min_length)}; "
             "need at least one step"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 < self.entropy_decay <= 1 and 0 < self.log_eps < 1 and 0 <= self.dropout_p < 1,
             "need 0 < entropy_decay <= 1, 0 < log_eps < 1 and 0 <= dropout_p < 1"),
            (self.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
             f"device must be cpu, cuda or cuda:N, got {self.device!r}"),
            (0 <= self.restart_above <= 1, f"restart_above must be in [0, 1], got {self.restart_above}"),
            (0 < self.exploit_fraction <= 0.5, f"exploit_fraction must be in (0, 0.5], got {self.exploit_fraction}"),
            (0 <= self.exploit_fresh <= 1, f"exploit_fresh must be in [0, 1], got {self.exploit_fresh}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self._validate_ranges()
        # The architecture must build (gates, controller options). On the CPU, not the meta device:
        # meta ops import torch._dynamo (1.7 s), and forking the RNG leaves seeded runs untouched.
        with torch.random.fork_rng(devices=[]):
            NRAM(self.machine_config())

    def _validate_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field_ in dataclasses.fields(self):
            expected = typing.get_origin(hints[field_.name]) or hints[field_.name]
            value = getattr(self, field_.name)
            if expected is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            elif expected is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, expected)
            if not ok:
                raise ValueError(f"{field_.name} must be of type {expected.__name__}, got {value!r}")

    def _validate_ranges(self) -> None:
        if not isinstance(self.population_ranges, dict):
            raise ValueError(f"population_ranges must be a table of name = [low, high], got {self.population_ranges!r}")
        for name, bounds in self.population_ranges.items():
            if name not in RANGED_SETTINGS:
                raise ValueError(f"population_ranges: unknown setting {name!r}; ranges can be given for "
                                 f"{', '.join(RANGED_SETTINGS)}")
            ok = (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                  and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds))
            if not ok or not 0 < bounds[0] <= bounds[1]:
                raise ValueError(f"population_ranges.{name} must be [low, high] with 0 < low <= high, got {bounds!r}")
        if self.population_ranges and self.population < 2:
            raise ValueError("population_ranges needs population >= 2")

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types, for checkpoints and TensorBoard."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build a config from a mapping, rejecting unknown keys with the list of valid ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {', '.join(unknown)}; valid settings are "
                             f"{', '.join(sorted(known))}")
        config = cls(**values)
        config.validate()
        return config


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a TOML file of TrainConfig fields, then apply ``overrides`` (None values are ignored).
    A ``[search]`` table, the ranges ``nram search`` samples (:mod:`training.search`), is not a
    setting and is left out."""
    values = read_toml(path)
    values.pop("search", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values, source=str(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's contents; ``ValueError`` with the reason when it is missing, unreadable or not TOML."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {path} cannot be read: {type(error).__name__}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {path} is not valid TOML: {error}") from None


def config_toml(config: TrainConfig, comment: str = "") -> str:
    """``config`` as a TOML file that :func:`load_config` reads back to an equal config;
    ``comment`` heads it, one ``#`` line per line."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [f"{key} = {_toml_value(value)}" for key, value in config.to_dict().items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }" \
            if value else "{}"
    raise ValueError(f"cannot write {value!r} ({type(value).__name__}) as TOML")


def default_config_path(task: str) -> Path | None:
    """The shipped ``training/configs/<task>.toml`` for a task, if any."""
    path = Path(str(resources.files("training.configs").joinpath(f"{task}.toml")))
    return path if path.exists() else None
