"""The training loop: curriculum, clipping, gradient noise, NaN guard, logs and checkpoints.

One :class:`Trainer` owns one run: its model, optimizer, curriculum and its random generators
(batches, gradient noise, dropout, the choices' Gumbel noise, and torch's global one for
anything else), all of which go into the checkpoint, so ``--resume`` continues bit for bit where the run stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from nram.model import NRAM, gumbel_noise, rollout_loss
from tasks import get_task
from tasks.base import TaskBatch
from tasks.curriculum import FixedCurriculum, ZarembaCurriculum
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.diagnostics import GateAdaptation, log_order_parameters
from training.distributed import data_parallel_model, gather_objects, setup_workers, sum_across_workers
from training.evaluate import cell_errors, evaluate
from training.optim import make_optimizer
from training.signals import Interrupted, StopRequest
from training.heatmaps import MemoryHeatmaps
from training.summaries import log_hparams

CHECKPOINT_NAME = "checkpoint.pt"
RANK_SEED_OFFSET = 1_000_003
"""Worker r samples its batches from seed + r * RANK_SEED_OFFSET, so workers see different data."""
RESTART_SEED_OFFSET = 7_919
"""Restart k of a run starts from the weights torch draws after manual_seed(seed + k * RESTART_SEED_OFFSET)."""
GUMBEL_SEED_OFFSET = 104_729
"""The choices' Gumbel noise (``gumbel_temperature``) comes from seed + this (+ the worker's
RANK_SEED_OFFSET): far from the seeds of a population's members' other streams."""


ARCHITECTURE_KEYS = ("task", "num_registers", "gates", "controller", "hidden_size", "dropout", "controller_options",
                     "optimizer", "max_length", "min_length", "curriculum", "memory_extra")
"""Settings a resumed run must share with its checkpoint."""


def fresh_counters(config: TrainConfig, started_at: int = 0) -> dict[str, float]:
    """The counters of an attempt starting at step ``started_at``: schedules from their beginning."""
    return {"entropy_weight": config.entropy_bonus, "nan_streak": 0, "skipped_steps": 0, "level_wrong": 0,
            "level_scored": 0, "restarts": 0, "started_at": started_at, "solved": 0}


def noise_std(config: TrainConfig, counters: dict[str, float], step: int) -> float:
    """sqrt(eta / (1 + t)^0.55), t counted from the attempt's (re)start (Neelakantan et al. 2015);
    0 while the last check found the attempt solved."""
    if counters["solved"]:
        return 0.0
    return math.sqrt(config.gradient_noise / (1 + step - counters["started_at"]) ** 0.55)


def attempt_ends(config: TrainConfig, counters: dict[str, float], step: int) -> bool:
    """Whether ``step`` ends an attempt: a multiple of ``restart_every`` steps since its (re)start."""
    every, started = config.restart_every, counters["started_at"]
    return bool(every) and step > started and (step - started) % every == 0


def check_same_run(payload: dict[str, Any], config: TrainConfig, path: Path, keys: tuple[str, ...] = ARCHITECTURE_KEYS
                   ) -> None:
    """Raise :class:`CheckpointError` unless the checkpoint ``payload`` (read from ``path``) was
    trained with this ``config``'s values of ``keys``."""
    saved = TrainConfig.from_dict(payload["config"], source=str(path))
    for key in keys:
        if getattr(saved, key) != getattr(config, key):
            raise CheckpointError(f"{path} was trained with {key}={getattr(saved, key)!r}, "
                                  f"this run has {key}={getattr(config, key)!r}")


class TrainingDiverged(RuntimeError):
    """The loss or the gradient was NaN or infinite for ``nan_patience`` steps in a row."""


def gate_probes(config: TrainConfig, device: torch.device, count: int = 256) -> torch.Tensor:
    """Fixed controller inputs ``[count, R]`` for :class:`GateAdaptation`: register is-zero
    probabilities, half of them exact 0/1 flags (what a sharp machine shows), half soft."""
    generator = torch.Generator().manual_seed(config.seed + 3)
    flags = torch.randint(0, 2, (count // 2, config.num_registers), generator=generator).float()
    soft = torch.rand(count - count // 2, config.num_registers, generator=generator)
    return torch.cat([flags, soft]).to(device)


def check_memory_fits(config: TrainConfig, budget_bytes: int | None = None) -> None:
    """Raise ``ValueError`` before any work if one training step would not fit in memory.

    A step keeps every timestep's memory ``[T, B, M, M]`` for the backward, about four such
    tensors (float32) counting the machine's saved intermediates, with ``B = population x
    batch_size``; the longest length bounds it. ``budget_bytes`` defaults to half the
    machine's (or the GPU's) memory.
    """
    n = config.max_length
    memory_size, steps = config.memory_size_for(n), config.training_timesteps_for(n)
    need = 4 * 4 * steps * config.population * config.batch_size * memory_size ** 2
    if budget_bytes is None:
        budget_bytes = available_memory(torch.device(config.device)) // 2
    if need > budget_bytes:
        members = f"a population of {config.population} at " if config.population > 1 else ""
        raise ValueError(f"{members}batch {config.batch_size} needs about {need / 2**30:.1f} GiB per step at "
                         f"length {n} (M = {memory_size}, T = {steps}), more than the {budget_bytes / 2**30:.1f} "
                         f"GiB allowed; use a shorter max_length, a smaller batch or fewer members")


def available_memory(device: torch.device) -> int:
    """Total memory of the GPU, or of this machine (bytes)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def new_curriculum(config: TrainConfig) -> FixedCurriculum | ZarembaCurriculum:
    """The config's curriculum at its first level."""
    if config.curriculum == "zaremba":
        return ZarembaCurriculum(config.min_length, config.max_length, threshold=config.promote_below)
    return FixedCurriculum(config.min_length, config.max_length)


def build_optimizer(config: TrainConfig, model: torch.nn.Module, native: bool = False) -> torch.optim.Optimizer:
    """The config's optimizer over the model, with only the arguments that optimizer takes; with
    ``native``, as the one-call C rollout trains, Adam's update runs in C
    (:class:`training.optim.NativeAdam`) and SGD is :class:`training.optim.DynamoFreeSGD`."""
    kwargs: dict[str, Any] = {"lr": config.lr}
    params: Any = model.parameters()
    if config.optimizer in ("adam", "sgd"):
        kwargs["weight_decay"] = config.weight_decay
    if config.optimizer == "sgd":
        kwargs["momentum"] = config.momentum
    if config.optimizer in ("rbd", "fpd"):
        if config.weight_decay or config.momentum:
            raise ValueError(f"optimizer {config.optimizer!r} takes no weight_decay or momentum")
        kwargs["seed"] = config.seed
        params = model.named_parameters()  # names let it give every module its own directions
    kwargs.update(config.optimizer_options)
    try:
        return make_optimizer(config.optimizer, params, native=native, **kwargs)
    except TypeError as error:
        raise ValueError(f"optimizer {config.optimizer!r}: {error}") from None


def draw_horizons(config: TrainConfig, length: int, count: int, generator: torch.Generator,
                  device: torch.device | str) -> Tensor:
    """The steps that ``count`` training examples of length n must stop by (``timesteps_jitter``):
    ``LongTensor[count]``, uniform on T(n)..``config.training_timesteps_for(n)``."""
    return torch.randint(config.timesteps_for(length), config.training_timesteps_for(length) + 1, (count,),
                         generator=generator).to(device)


class Trainer:
    """Trains an NRAM on ``config.task``, writing TensorBoard events and checkpoints to ``out_dir``."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True):
        if config.population > 1:
            raise ValueError("a population trains with training.population.PopulationTrainer")
        self._set_up_run(config, out_dir, progress)
        torch.manual_seed(config.seed)
        self.model = NRAM(config.machine_config()).to(self.device)
        self.native_rollouts = (self.workers.world_size == 1 and config.gumbel_temperature == 0
                                and config.timesteps_jitter == 0 and self.model.trains_natively())
        """Whether rollouts without an entropy bonus train in one C call (:meth:`_train_rollout`),
        with the optimizers :func:`build_optimizer` gives ``native``."""
        self.optimizer = build_optimizer(config, self.model, native=self.native_rollouts)
        data_parallel = self.workers.world_size > 1 and config.optimizer in ("adam", "sgd")
        self.forward_model = data_parallel_model(self.model) if data_parallel else self.model
        self.curriculum = new_curriculum(config)
        self.data_generator = torch.Generator().manual_seed(config.seed + RANK_SEED_OFFSET * self.workers.rank)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.dropout_generator = torch.Generator(device=self.device).manual_seed(config.seed + 2)
        self.gumbel_generator = torch.Generator(device=self.device).manual_seed(
            config.seed + GUMBEL_SEED_OFFSET + RANK_SEED_OFFSET * self.workers.rank)
        self.gate_monitor = GateAdaptation(self.model, gate_probes(config, self.device)) \
            if config.controller == "gated" else None
        self.step = 0
        self.counters: dict[str, float] = fresh_counters(config)
        if resume:
            self.restore(load_checkpoint(self.checkpoint_path, map_location=self.device))

    def _set_up_run(self, config: TrainConfig, out_dir: str | Path, progress: bool) -> None:
        """What every run sets up before its model: the checked config, the device, the workers,
        threads and task; ValueError before any work where the config, device or memory will not do."""
        config.validate()
        self.started = time.perf_counter()
        self.earlier_seconds = 0.0
        """Seconds the run's earlier processes took, each to its last checkpoint (0 for a new run)."""
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r} was asked for, but torch sees no CUDA device")
        self.workers, self.device = setup_workers(self.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.task = get_task(config.task)
        check_memory_fits(config)
        self._scores: dict[tuple[int, bool, int], dict] = {}
        """:meth:`evaluate`'s records by (length, discrete, examples), for the weights ``_scores_key`` names."""
        self._scores_key: tuple[int, ...] | None = None

    @property
    def checkpoint_path(self) -> Path:
        """``out_dir/checkpoint.pt``."""
        return self.out_dir / CHECKPOINT_NAME

    def wall_seconds(self) -> float:
        """Seconds this run has taken so far: its earlier processes' (to their last checkpoints) and this one's."""
        return self.earlier_seconds + time.perf_counter() - self.started

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly, in plain types and tensors."""
        return {"config": self.config.to_dict(), "step": self.step, "seconds": self.wall_seconds(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "curriculum": self.curriculum.state_dict(),
                "rng": {"data": self.data_generator.get_state(), "noise": self.noise_generator.get_state(),
                        "dropout": self.dropout_generator.get_state(), "torch": torch.get_rng_state()},
                "trainer": dict(self.counters),
                "gate_monitor": self.gate_monitor.state_dict() if self.gate_monitor else {}}

    def save(self) -> Path:
        """Write the checkpoint (rank 0 only; every worker must call it); returns its path."""
        state = self.state()
        state["rng"]["data_by_rank"] = gather_objects(state["rng"]["data"], self.workers)
        state["rng"]["gumbel_by_rank"] = gather_objects(self.gumbel_generator.get_state(), self.workers)
        if self.workers.is_main:
            save_checkpoint(self.checkpoint_path, state)
        return self.checkpoint_path

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from a checkpoint of the same task and architecture."""
        check_same_run(payload, self.config, self.checkpoint_path)
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.curriculum.load_state_dict(payload["curriculum"])
            by_rank = payload["rng"]["data_by_rank"]
            if len(by_rank) != self.workers.world_size:
                raise CheckpointError(f"{self.checkpoint_path} was written by {len(by_rank)} worker(s); "
                                      f"resume it with as many (this run has {self.workers.world_size})")
            self.data_generator.set_state(by_rank[self.workers.rank])
            self.noise_generator.set_state(payload["rng"]["noise"])
            self.dropout_generator.set_state(payload["rng"]["dropout"])
            if "gumbel_by_rank" in payload["rng"]:  # absent from checkpoints older than the Gumbel choices
                self.gumbel_generator.set_state(payload["rng"]["gumbel_by_rank"][self.workers.rank])
            torch.set_rng_state(payload["rng"]["torch"])
            if self.gate_monitor:
                self.gate_monitor.load_state_dict(payload["gate_monitor"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise CheckpointError(f"{self.checkpoint_path} does not fit this model: {error}") from None
        self.step = int(payload["step"])
        self.earlier_seconds = float(payload.get("seconds", 0.0))
        self.counters.update(payload["trainer"])

    # ---------------------------------------------------------------- one step
    def timesteps_for(self, length: int) -> int:
        """T(n) from the config."""
        return self.config.timesteps_for(length)

    def training_batches(self, lengths: torch.Tensor) -> list[tuple[torch.Tensor, TaskBatch, int, Tensor | None]]:
        """The rollouts one step trains on, as ``(lengths [b], batch, steps, horizons)``.

        By default one: the whole batch at the M and T of its longest input. With
        ``batch_by_length``, one per distinct length n, at M(n) and T(n). With
        ``timesteps_jitter`` a rollout runs ``config.training_timesteps_for(n)`` steps and
        ``horizons`` ``LongTensor[b]`` holds the step each example must stop by, drawn after
        its batch; otherwise ``steps`` is T(n) and ``horizons`` None.
        """
        config = self.config
        if not config.batch_by_length:
            longest = int(lengths.max())
            batch = self.task.sample_mixed(lengths, config.memory_size_for(longest), self.data_generator,
                                           device=self.device)
            return [(lengths, batch, *self._horizons(longest, lengths.numel()))]
        batches = []
        for n in torch.unique(lengths).tolist():
            group = lengths[lengths == n]
            batch = self.task.sample(group.numel(), n, config.memory_size_for(n), self.data_generator,
                                     device=self.device)  # draws what sample_mixed would from one length
            batches.append((group, batch, *self._horizons(n, group.numel())))
        return batches

    def _horizons(self, length: int, count: int) -> tuple[int, Tensor | None]:
        """``(steps, horizons)`` of a training rollout of ``count`` examples at length n (see
        :meth:`training_batches`); the horizons come from the data generator."""
        config = self.config
        if config.timesteps_jitter == 0:
            return self.timesteps_for(length), None
        return config.training_timesteps_for(length), draw_horizons(config, length, count, self.data_generator,
                                                                    self.device)

    def train_step(self) -> dict[str, float]:
        """Sample a curriculum batch, take one optimizer step (or skip it on NaN); returns its stats.

        Each rollout's loss enters with its share of the batch, so the step follows the
        gradient of the mean loss over all examples however they are grouped.
        """
        config = self.config
        lengths = self.curriculum.sample_lengths(config.batch_size, self.data_generator)
        batches = self.training_batches(lengths)
        self.optimizer.zero_grad(set_to_none=True)
        loss, wrong, scored = 0.0, 0, 0
        for index, (group, batch, steps, horizons) in enumerate(batches):
            share = group.numel() / lengths.numel()
            group_loss, output = self._train_rollout(batch, steps, horizons, share, last=index == len(batches) - 1)
            loss += group_loss * share
            group_wrong, group_scored = cell_errors(output.argmax(-1), batch)
            at_level = group.to(self.device) == self.curriculum_level
            self.counters["level_wrong"] += int(group_wrong[at_level].sum())
            self.counters["level_scored"] += int(group_scored[at_level].sum())
            wrong += int(group_wrong.sum())
            scored += int(group_scored.sum())
        grad_norm = self._clip_and_perturb()
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            self.optimizer.step()
            self.counters["nan_streak"] = 0
        else:
            self.counters["nan_streak"] += 1
            self.counters["skipped_steps"] += 1
            if self.counters["nan_streak"] >= config.nan_patience:
                last_good = (f"The last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path.exists()
                             else "No checkpoint was written before it")
                raise TrainingDiverged(
                    f"loss or gradient was NaN/inf for {config.nan_patience} steps in a row (step {self.step}); "
                    f"try a lower lr (now {config.lr}), stronger clipping or a larger log_eps. {last_good}")
        self.counters["entropy_weight"] *= config.entropy_decay
        self.step += 1
        return {"loss": loss, "cell_error": wrong / max(scored, 1), "grad_norm": grad_norm,
                "skipped": 0.0 if finite else 1.0}

    def _train_rollout(self, batch: TaskBatch, steps: int, horizons: Tensor | None, share: float,
                       last: bool) -> tuple[float, Tensor]:
        """Forward and backward of one rollout, each example stopping by its horizon (if any), its
        loss entering the step's with weight ``share``: adds its gradients to ``.grad``; returns
        its mean loss and output memory ``[b, M, M]`` (no gradient). A plain MLP on the CPU,
        without entropy bonus, choice noise, horizons or other workers, runs all of it in one C
        call (:meth:`NRAM.train_rollout_natively`)."""
        config = self.config
        entropy_weight = self.counters["entropy_weight"]
        if self.native_rollouts and entropy_weight == 0:
            losses, output = self.model.train_rollout_natively(batch.memory, batch.target, batch.mask, steps,
                                                               scale=share / batch.memory.shape[0], eps=config.log_eps)
            return losses.mean().item(), output
        if hasattr(self.model.controller, "resample"):  # one dropout pattern per rollout
            self.model.controller.resample(self.dropout_generator)
        with self._gradient_sync(last):
            rollout = self.forward_model(batch.memory, steps, with_entropy=entropy_weight > 0,
                                         **self.sampled_choices(steps, batch.memory.shape[0]))
            if horizons is not None:
                rollout = rollout.stopped_at(horizons)
            group_loss = rollout_loss(rollout, batch.target, batch.mask, config.log_eps)
            objective = group_loss
            if rollout.choice_entropy is not None:
                objective = group_loss - entropy_weight * rollout.choice_entropy.mean()
            (objective * share).backward()
        return group_loss.item(), rollout.output_memory().detach()

    def sampled_choices(self, steps: int, batch_size: int) -> dict[str, Any]:
        """The keyword arguments that make one training rollout's choices Gumbel-softmax samples
        (``choice_noise`` ``[T, num_choice_logits, B]`` and ``temperature``), or none when
        ``gumbel_temperature`` is 0."""
        if self.config.gumbel_temperature == 0:
            return {}
        noise = gumbel_noise((steps, self.model.num_choice_logits, batch_size), self.gumbel_generator,
                             dtype=self.model.dtype, device=self.device)
        return {"choice_noise": noise, "temperature": self.config.gumbel_temperature}

    def _gradient_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """DistributedDataParallel averages gradients on the last backward of a step only."""
        if last or not isinstance(self.forward_model, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.forward_model.no_sync()

    @property
    def curriculum_level(self) -> int:
        """The curriculum's current level (the longest length for a fixed curriculum)."""
        return getattr(self.curriculum, "level", self.config.max_length)

    def gradient_noise_std(self) -> float:
        """The noise's scale now (:func:`noise_std`)."""
        return noise_std(self.config, self.counters, self.step)

    def _clip_and_perturb(self) -> float:
        """Clip elementwise, then by norm; add annealed Gaussian noise (scaled to the clipped
        gradient's norm with ``noise_relative``). Returns the norm before clipping."""
        config = self.config
        params = [p for p in self.model.parameters() if p.grad is not None]
        if config.clip_value > 0:
            torch.nn.utils.clip_grad_value_(params, config.clip_value)
        max_norm = config.clip_norm if config.clip_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        std = self.gradient_noise_std() if config.gradient_noise > 0 else 0.0
        if config.noise_relative:
            std *= min(norm.item(), max_norm) / math.sqrt(sum(p.numel() for p in params))
        if std > 0:
            for p in params:
                p.grad.add_(torch.randn(p.shape, generator=self.noise_generator, device=p.device, dtype=p.dtype),
                            alpha=std)
        return norm.item()

    def training_error(self) -> float:
        """Mean per-cell error (``eval_examples`` per length) over all the training lengths: soft,
        or with ``check_discrete`` the worse of soft and discrete at each length."""
        lengths = self.config.train_lengths()
        errors = [record["cell_error"] for record in self.evaluate(lengths)]
        if self.config.check_discrete:
            discrete = self.evaluate(lengths, discrete=True)
            errors = [max(error, record["cell_error"]) for error, record in zip(errors, discrete)]
        return sum(errors) / len(lengths)

    def restart(self) -> None:
        """Start again (the paper's restarts, within one run): fresh weights seeded by the run's
        seed and the restart's number, a fresh optimizer and curriculum, and the noise and
        entropy schedules from their beginning."""
        config = self.config
        self.counters["restarts"] += 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + RESTART_SEED_OFFSET * int(self.counters["restarts"]))
            fresh = NRAM(config.machine_config())
        self.model.load_state_dict(fresh.state_dict())
        self.optimizer = build_optimizer(config, self.model, native=self.native_rollouts)
        self.curriculum = new_curriculum(config)
        if self.gate_monitor:
            self.gate_monitor = GateAdaptation(self.model, gate_probes(config, self.device))
        self.counters.update(entropy_weight=config.entropy_bonus, started_at=self.step, level_wrong=0,
                             level_scored=0)

    def check_attempt(self) -> float:
        """Score the run over its training lengths: at or below ``restart_above`` it is marked solved,
        which ends the run when ``stop_when_solved``; above it, an attempt that has ended restarts
        (unless the steps are spent). Workers decide on their mean error, so all agree. Returns
        the error."""
        error = sum_across_workers([self.training_error()], self.workers, self.device)[0] / self.workers.world_size
        self.counters["solved"] = int(error <= self.config.restart_above)
        if not self.counters["solved"] and self.attempt_ends() and self.step < self.config.steps:
            self.restart()
        return error

    def attempt_ends(self) -> bool:
        """Whether this step ends an attempt (:func:`attempt_ends`)."""
        return attempt_ends(self.config, self.counters, self.step)

    def check_due(self) -> bool:
        """Whether :meth:`check_attempt` runs at this step: an attempt ends, or, for a run that stops
        when solved, an evaluation is due (so a run exact at step 1000 stops there)."""
        evaluation = self.config.stop_when_solved and self.step > 0 and self.step % self.config.eval_every == 0
        return self.attempt_ends() or evaluation

    def _update_curriculum(self) -> None:
        wrong, scored = sum_across_workers([self.counters["level_wrong"], self.counters["level_scored"]],
                                           self.workers, self.device)
        if scored:
            self.curriculum.update(wrong / scored)
        self.counters["level_wrong"] = self.counters["level_scored"] = 0

    # ---------------------------------------------------------------- the loop
    def evaluate(self, lengths: list[int], discrete: bool = False, examples: int | None = None) -> list[dict]:
        """Error by length at memory size M(n) and T(n) steps (see :func:`training.evaluate.evaluate`).

        A length scored before with the same weights (:meth:`weights_key`) is not run again, so a
        check, the periodic evaluation and the final table at one step score each length once.
        """
        examples = examples or self.config.eval_examples
        key = self.weights_key()
        if self._scores_key != key:
            self._scores, self._scores_key = {}, key
        missing = [n for n in lengths if (n, discrete, examples) not in self._scores]
        if missing:
            for record in self._score(missing, discrete, examples):
                self._scores[record["length"], discrete, examples] = record
        return [dict(self._scores[n, discrete, examples]) for n in lengths]

    def weights_key(self) -> tuple[int, ...]:
        """Names the weights :meth:`evaluate` scores: the step and every parameter's version counter.
        torch bumps the counter at each in-place change (a restart, a load, a distilled program);
        the C step, which writes past it, always moves the step. A write through ``.data`` bumps
        nothing: clear ``_scores`` after one."""
        return (self.step, *(parameter._version for parameter in self.model.parameters()))

    def _score(self, lengths: list[int], discrete: bool, examples: int) -> list[dict]:
        """:func:`training.evaluate.evaluate`'s records of the model, unremembered."""
        return evaluate(self.model, self.task, lengths, memory_size_for=self.config.memory_size_for,
                        timesteps_for=self.timesteps_for, examples=examples, discrete=discrete,
                        seed=self.config.seed, device=self.device)

    def eval_lengths(self) -> list[int]:
        """Training lengths plus 2x the longest one: what the periodic evaluation reports."""
        return self.config.train_lengths() + [2 * self.config.max_length]

    def train(self, on_check: Callable[[int, float], bool] | None = None) -> list[dict]:
        """Run until ``config.steps``, or with ``stop_when_solved`` until the first check that finds
        the run solved; returns the final evaluation (empty on workers other than rank 0, which
        alone logs). SIGINT or SIGTERM ends the run between two steps, or after the final
        evaluation: the checkpoint is written, then :class:`training.signals.Interrupted` raised.
        ``on_check(step, error)`` hears every check's error (:meth:`check_attempt`); when it returns
        True the run ends there as if its budget were spent (``nram search`` prunes so)."""
        config = self.config
        main = self.workers.is_main
        # purge_step: TensorBoard drops the events an earlier writer logged after this checkpoint's step
        # (the checkpoint follows its own step's logs), so a resumed run continues one history
        writer = SummaryWriter(log_dir=str(self.out_dir), purge_step=self.step + 1 if self.step else None) \
            if main else None
        bar = tqdm(total=config.steps, initial=self.step, desc=f"{config.task} seed {config.seed}",
                   unit="step", disable=not (self.progress and main), dynamic_ncols=True)
        final, evaluated_at = [], None
        heatmaps = MemoryHeatmaps(writer, self.task, config, self.device) if writer else None
        with StopRequest() as stop, heatmaps or contextlib.nullcontext():
            if self.check_due():  # an earlier, shorter budget ended on a check that could not restart
                self.check_attempt()
            while self.continues():
                if self._stop_requested(stop):
                    bar.close()
                    if writer:
                        heatmaps.close()
                        writer.close()
                    path = self.save()
                    raise Interrupted(stop.signum, f"{signal.Signals(stop.signum).name} at step {self.step}: "
                                                   f"checkpoint saved to {path}; continue with --resume")
                stats = self.train_step()
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    self._update_curriculum()
                    if writer:
                        self._log_scalars(writer, stats)
                    bar.set_postfix(self.progress_postfix(stats))
                ended_by_caller = False
                if self.check_due():
                    error = self.check_attempt()
                    ended_by_caller = on_check is not None and on_check(self.step, error)
                if writer and self.step % config.eval_every == 0:
                    last = ended_by_caller or not self.continues()  # the final evaluation shows the memory too
                    images = last or self.step % config.image_every < config.eval_every
                    final, evaluated_at = self._log_evaluation(writer, heatmaps if images else None), self.step
                if self.step % config.checkpoint_every == 0:
                    self.save()
                if ended_by_caller:
                    break
            if config.stop_when_solved and self.counters["solved"]:
                bar.total = self.step  # the budget was not needed: show the run as complete
                bar.refresh()
            bar.close()
            path = self.save()
            if writer:
                if evaluated_at != self.step:
                    final = self._log_evaluation(writer, heatmaps)
                for record in self.evaluate(self.config.report_lengths(), discrete=True):  # while the pictures are drawn
                    writer.add_scalar(f"eval/discrete_cell_error_length_{record['length']}", record["cell_error"],
                                      self.step)
                log_hparams(writer, config, final)
                heatmaps.close()  # every picture in the log before it closes
                writer.close()
            if stop.requested:
                raise Interrupted(stop.signum, f"{signal.Signals(stop.signum).name} at the end of the run: "
                                               f"checkpoint saved to {path} (step {self.step})")
        return final

    def continues(self) -> bool:
        """Whether the run trains on: steps are left, and it has not stopped on being solved."""
        return self.step < self.config.steps and not (self.config.stop_when_solved and self.counters["solved"])

    def _stop_requested(self, stop: StopRequest) -> bool:
        """Whether any worker caught a stop signal (all workers agree, so all save together)."""
        if self.workers.world_size == 1:
            return stop.requested
        return sum_across_workers([float(stop.requested)], self.workers, self.device)[0] > 0

    def progress_postfix(self, stats: dict[str, Any]) -> dict[str, Any]:
        """What the progress bar shows beside the step count."""
        return {"loss": f"{stats['loss']:.3f}", "err": f"{stats['cell_error']:.3f}", "level": self.curriculum_level}

    def _log_scalars(self, writer: SummaryWriter, stats: dict[str, float]) -> None:
        writer.add_scalar("train/loss", stats["loss"], self.step)
        writer.add_scalar("train/cell_error", stats["cell_error"], self.step)
        writer.add_scalar("train/grad_norm", stats["grad_norm"], self.step)
        writer.add_scalar("train/skipped_steps", self.counters["skipped_steps"], self.step)
        writer.add_scalar("train/restarts", self.counters["restarts"], self.step)
        writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
        writer.add_scalar("curriculum/level", self.curriculum_level, self.step)
        log_order_parameters(writer, self.model.controller, self.step)
        if self.gate_monitor:
            self.gate_monitor.log(writer, self.step)

    def reported_model(self) -> NRAM:
        """The model that evaluations report and heatmaps show."""
        return self.model

    def _log_evaluation(self, writer: SummaryWriter, heatmaps: MemoryHeatmaps | None) -> list[dict]:
        """Error by length (:meth:`eval_lengths`) into the log, and the memory heatmaps when
        ``heatmaps`` is given (asked for first: they are drawn while the evaluation runs)."""
        if heatmaps is not None:
            model = self.reported_model()
            model.eval()
            heatmaps.log(model, self.step)
            model.train()
        records = self.evaluate(self.eval_lengths())
        for record in records:
            writer.add_scalar(f"eval/cell_error_length_{record['length']}", record["cell_error"], self.step)
        writer.flush()
        return records
