"""Population training: P independent attempts in one vectorised model (``nram train --population P``).

The P members are one :class:`nram.population.PopulationNRAM` (every controller weight
``[P, ...]``), so one step runs every member's batch as one machine batch and one batched
controller. Members share nothing: member i has seed ``seed + i``, its own batches, gradient
noise, optimizer state (:mod:`training.optim.members`), curriculum, restarts and, with
``population_ranges``, hyperparameters; its gradient is that of its own mean loss, so a
member trains exactly as the ordinary run with its seed would, up to float rounding
(``tests/test_population.py``). Every step trains each length n at its own M(n) and T(n) (one
rollout per length, members padded to a common count with unscored rows).

Every ``exploit_every`` steps, population-based training replaces the worst members; checks
find members exact at every training length, and the run stops at the first one (with
``stop_when_solved``). ``population.pt`` holds the whole population (``--resume`` continues it
exactly); ``checkpoint.pt`` is the best member as an ordinary run, which ``nram eval``, ``nram
run`` and a plain ``nram train --resume`` take as they are.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from nram.model import NRAM, example_losses, gumbel_noise
from nram.population import PopulationNRAM
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.config import RANGED_SETTINGS, TrainConfig
from training.diagnostics import GateAdaptation
from training.evaluate import cell_errors, evaluate, evaluation_batches, final_memory
from training.optim.members import MEMBER_OPTIMIZERS
from training.heatmaps import MemoryHeatmaps
from training.trainer import ARCHITECTURE_KEYS, GUMBEL_SEED_OFFSET, RESTART_SEED_OFFSET, Trainer, attempt_ends, \
    build_optimizer, check_same_run, draw_horizons, fresh_counters, gate_probes, new_curriculum, noise_std

POPULATION_NAME = "population.pt"
"""The whole population's checkpoint, beside the best member's ``checkpoint.pt``."""
POPULATION_KEYS = ("config", "step", "best", "model", "optimizer", "counters", "members")
"""What ``population.pt`` must hold."""
PERTURBATIONS = (0.8, 1.25)
"""Exploration multiplies each ranged hyperparameter of a copied member by one of these."""
CHOICE_SEED_OFFSET = 999_983
"""The population's own draws (ranged hyperparameters, exploitation) come from seed + this, a
stream no member's data (seed + i) or noise (seed + i + 1) generator shares."""


@dataclasses.dataclass
class Member:
    """One member's own state: its config (seed and hyperparameters), curriculum, generators, counters."""

    config: TrainConfig
    curriculum: Any
    data_generator: torch.Generator
    noise_generator: torch.Generator
    gumbel_generator: torch.Generator
    counters: dict[str, float]
    error: float = math.inf
    """Per-cell error over the training lengths at the last check."""


def member_config(config: TrainConfig, index: int, **values: float) -> TrainConfig:
    """Member ``index``'s config: an ordinary single run with seed ``seed + index`` and ``values``."""
    return dataclasses.replace(config, seed=config.seed + index, population=1, population_ranges={},
                               exploit_every=0, **values)


class PopulationTrainer(Trainer):
    """Trains ``config.population`` members of one architecture side by side; see the module docstring.

    It runs :meth:`Trainer.train`'s loop, with the step, checks, logs and checkpoints below.
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True):
        if config.population < 2:
            raise ValueError(f"a population needs at least 2 members, got {config.population}")
        if config.optimizer not in MEMBER_OPTIMIZERS:
            raise ValueError(f"a population trains with {' or '.join(MEMBER_OPTIMIZERS)}, not {config.optimizer!r}")
        if config.dropout != "none":
            raise ValueError("a population's controllers take no dropout (dropout = 'none')")
        if not config.batch_by_length:
            raise ValueError("a population trains every length at its own M(n) and T(n): batch_by_length = true")
        self._set_up_run(config, out_dir, progress)
        if self.workers.world_size > 1:
            raise ValueError("a population trains in one process: run it without torchrun")
        size = config.population
        self.choice_generator = torch.Generator().manual_seed(config.seed + CHOICE_SEED_OFFSET)
        self.members = [self._new_member(i) for i in range(size)]
        self.model = PopulationNRAM(config.machine_config(), size).to(self.device)
        for index in range(size):
            self._fresh_weights(index)
        optimizer_class = MEMBER_OPTIMIZERS[config.optimizer]
        extra = {"momentum": config.momentum} if config.optimizer == "sgd" else {}
        try:
            self.optimizer = optimizer_class(self.model.parameters(), lr=self._member_values("lr"),
                                             weight_decay=self._member_values("weight_decay"),
                                             **extra, **config.optimizer_options)
        except TypeError as error:
            raise ValueError(f"optimizer {config.optimizer!r} in a population: {error}") from None
        self.gate_monitor = None
        self.step = 0
        self.best = 0
        self.counters = {"solved": 0, "restarts": 0, "exploited": 0, "checked_at": -1}
        if resume:
            self.restore(load_checkpoint(self.population_path, map_location=self.device, required=POPULATION_KEYS))

    # ---------------------------------------------------------------- members
    def _new_member(self, index: int) -> Member:
        values = {}
        if index > 0:
            for name, (low, high) in self.config.population_ranges.items():
                u = float(torch.rand((), generator=self.choice_generator, dtype=torch.float64))
                values[name] = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        config = member_config(self.config, index, **values)
        return Member(config, new_curriculum(config), torch.Generator().manual_seed(config.seed),
                      torch.Generator(device=self.device).manual_seed(config.seed + 1),
                      torch.Generator(device=self.device).manual_seed(config.seed + GUMBEL_SEED_OFFSET),
                      fresh_counters(config))

    def _member_values(self, name: str) -> Tensor:
        """Setting ``name`` of every member, ``[P]`` (float64)."""
        return torch.tensor([getattr(member.config, name) for member in self.members], dtype=torch.float64)

    def _fresh_weights(self, index: int) -> None:
        """Member ``index``'s weights as an ordinary run with its seed draws them (at its restart count)."""
        member = self.members[index]
        seed = member.config.seed + RESTART_SEED_OFFSET * int(member.counters["restarts"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = NRAM(member.config.machine_config())
        self.model.load_member(index, fresh.state_dict())

    def restart_member(self, index: int) -> None:
        """Member ``index`` starts again, as an ordinary run's restart does."""
        member = self.members[index]
        restarts = int(member.counters["restarts"]) + 1
        member.counters = fresh_counters(member.config, started_at=self.step)
        member.counters["restarts"] = restarts
        member.curriculum = new_curriculum(member.config)
        member.error = math.inf
        self._fresh_weights(index)
        self.optimizer.reset_member(index)
        self.counters["restarts"] += 1

    def copy_member(self, source: int, target: int) -> None:
        """Member ``target`` continues from ``source``'s weights, optimizer state and curriculum,
        with each ranged hyperparameter of ``source`` multiplied by 0.8 or 1.25 (kept in range).
        It keeps its own seed and generators, so it does not repeat ``source``'s batches."""
        donor, member = self.members[source], self.members[target]
        values = {}
        for name, (low, high) in self.config.population_ranges.items():
            factor = PERTURBATIONS[int(torch.randint(2, (), generator=self.choice_generator))]
            values[name] = min(max(getattr(donor.config, name) * factor, low), high)
        member.config = dataclasses.replace(member.config, **values)
        self.model.load_member(target, self.model.member_state(source))
        self.optimizer.copy_member(source, target)
        self.optimizer.param_groups[0]["lr"][target] = member.config.lr
        self.optimizer.param_groups[0]["weight_decay"][target] = member.config.weight_decay
        member.curriculum.load_state_dict(donor.curriculum.state_dict())
        restarts = member.counters["restarts"]
        member.counters = dict(donor.counters, restarts=restarts)
        if donor.config.entropy_bonus > 0:  # the decayed weight, rescaled to the perturbed bonus
            member.counters["entropy_weight"] *= member.config.entropy_bonus / donor.config.entropy_bonus
        member.error = donor.error
        self.counters["exploited"] += 1

    # ---------------------------------------------------------------- one step
    def train_step(self) -> dict[str, Any]:
        """One step of every member: its own curriculum batch, each length at M(n) and T(n)."""
        config, size = self.config, self.config.population
        lengths = [member.curriculum.sample_lengths(config.batch_size, member.data_generator)
                   for member in self.members]
        self.optimizer.zero_grad(set_to_none=True)
        entropy = torch.tensor([member.counters["entropy_weight"] for member in self.members], device=self.device)
        losses = torch.zeros(size, dtype=torch.float64, device=self.device)
        wrong = torch.zeros(size, dtype=torch.long, device=self.device)
        scored = torch.zeros_like(wrong)
        for n in torch.unique(torch.cat(lengths)).tolist():
            batch, real, horizons = self._length_batch(lengths, n)
            steps = config.training_timesteps_for(n)
            rollout = self.model(batch.memory, steps, with_entropy=bool(entropy.any()),
                                 **self._sampled_choices(steps, real))
            if horizons is not None:
                rollout = rollout.stopped_at(horizons)
            nll = example_losses(rollout, batch.target, batch.mask, config.log_eps).view(size, -1)
            objective = nll.sum(1)
            if rollout.choice_entropy is not None:
                objective = objective - entropy * (rollout.choice_entropy.mean(0).view(size, -1) * real).sum(1)
            (objective.sum() / config.batch_size).backward()
            losses += nll.detach().sum(1).double() / config.batch_size
            with torch.no_grad():
                row_wrong, row_scored = (x.view(size, -1) for x in cell_errors(rollout.output_memory().argmax(-1),
                                                                                 batch))
                wrong += row_wrong.sum(1)
                scored += row_scored.sum(1)
                for index, member in enumerate(self.members):
                    if n == getattr(member.curriculum, "level", config.max_length):
                        member.counters["level_wrong"] += int(row_wrong[index].sum())
                        member.counters["level_scored"] += int(row_scored[index].sum())
        norms = self._clip_and_perturb()
        finite = torch.isfinite(losses.cpu()) & torch.isfinite(norms)
        self.optimizer.step(active=finite.to(self.device))
        self.step += 1
        for index, member in enumerate(self.members):
            member.counters["entropy_weight"] *= config.entropy_decay
            if finite[index]:
                member.counters["nan_streak"] = 0
                continue
            member.counters["nan_streak"] += 1
            member.counters["skipped_steps"] += 1
            if member.counters["nan_streak"] >= config.nan_patience:
                self.restart_member(index)  # one member diverging does not end the others
        errors = (wrong.double() / scored.clamp_min(1)).cpu()
        return {"loss": losses.cpu(), "cell_error": errors, "grad_norm": norms, "skipped": (~finite).double()}

    def _length_batch(self, lengths: list[Tensor], n: int):
        """Every member's examples of length n at M(n), member-major, each member padded to the
        largest count with unscored all-zero rows: (TaskBatch ``[P*c, M]``, real rows ``[P, c]``,
        horizons ``[P*c]`` or None), each member's horizons (``timesteps_jitter``) drawn after its
        examples, as its own run draws them; a padded row's is the rollout's last step."""
        config, size = self.config, self.config.population
        memory_size = config.memory_size_for(n)
        counts = [int((member_lengths == n).sum()) for member_lengths in lengths]
        width = max(counts)
        memory = torch.zeros(size, width, memory_size, dtype=torch.long)
        target = torch.zeros_like(memory)
        mask = torch.zeros(size, width, memory_size, dtype=torch.bool)
        real = torch.zeros(size, width, dtype=torch.bool)
        jitter = config.timesteps_jitter > 0
        horizons = torch.full((size, width), config.training_timesteps_for(n), dtype=torch.long)
        for index, (member, count) in enumerate(zip(self.members, counts)):
            if count:
                part = self.task.sample(count, n, memory_size, member.data_generator)  # = sample_mixed of `count` n's
                memory[index, :count], target[index, :count], mask[index, :count] = part
                real[index, :count] = True
                if jitter:
                    horizons[index, :count] = draw_horizons(config, n, count, member.data_generator, "cpu")
        batch = type(part)(*(x.view(size * width, memory_size).to(self.device) for x in (memory, target, mask)))
        return batch, real.to(self.device), horizons.view(-1).to(self.device) if jitter else None

    def _sampled_choices(self, steps: int, real: Tensor) -> dict[str, Any]:
        """:meth:`Trainer.sampled_choices` for one rollout of every member (``real`` ``[P, c]``): each
        member with a ``gumbel_temperature`` draws the noise of its real rows from its own generator,
        as its ordinary run would; padded rows and members without one mix unperturbed."""
        temperatures = [member.config.gumbel_temperature for member in self.members]
        if not any(temperatures):
            return {}
        size, width = real.shape
        noise = torch.zeros(steps, self.model.num_choice_logits, size, width, dtype=self.model.dtype,
                            device=self.device)
        for index, (member, temperature) in enumerate(zip(self.members, temperatures)):
            count = int(real[index].sum())
            if temperature and count:
                noise[:, :, index, :count] = gumbel_noise((steps, self.model.num_choice_logits, count),
                                                          member.gumbel_generator, dtype=self.model.dtype,
                                                          device=self.device)
        temperature = torch.tensor([t or 1.0 for t in temperatures], dtype=self.model.dtype, device=self.device)
        return {"choice_noise": noise.flatten(2), "temperature": temperature.repeat_interleave(width)}

    def _clip_and_perturb(self) -> Tensor:
        """Per member: clip elementwise, then by the member's gradient norm; add its noise.
        Returns each member's norm before clipping ``[P]``."""
        config = self.config
        params = [p for p in self.model.parameters() if p.grad is not None]
        if config.clip_value > 0:
            for p in params:
                p.grad.clamp_(-config.clip_value, config.clip_value)
        norms = torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in params]).sum(0).sqrt()
        clipped = norms
        if config.clip_norm > 0:
            coefficient = (config.clip_norm / (norms + 1e-6)).clamp(max=1.0)
            for p in params:
                p.grad.mul_(coefficient.view(-1, *([1] * (p.dim() - 1))))
            clipped = norms * coefficient
        size = sum(p[0].numel() for p in params)
        for index, member in enumerate(self.members):
            std = self.member_noise_std(index)
            if config.noise_relative:
                std *= float(clipped[index]) / math.sqrt(size)
            if std > 0:
                for p in params:
                    noise = torch.randn(p.shape[1:], generator=member.noise_generator, device=p.device, dtype=p.dtype)
                    p.grad[index].add_(noise, alpha=std)
        return norms.cpu()

    def member_noise_std(self, index: int) -> float:
        """Member ``index``'s noise scale (:func:`training.trainer.noise_std` on its own clock and eta)."""
        member = self.members[index]
        return noise_std(member.config, member.counters, self.step)

    def progress_postfix(self, stats: dict[str, Any]) -> dict[str, Any]:
        """The best member's loss, error and level, and the population's lowest error."""
        best = self.best
        return {"best": best, "loss": f"{float(stats['loss'][best]):.3f}",
                "err": f"{float(stats['cell_error'][best]):.3f}", "min_err": f"{float(stats['cell_error'].min()):.3f}",
                "level": self.curriculum_level}

    @property
    def curriculum_level(self) -> int:
        """The best member's curriculum level."""
        return getattr(self.members[self.best].curriculum, "level", self.config.max_length)

    def _update_curriculum(self) -> None:
        for member in self.members:
            if member.counters["level_scored"]:
                member.curriculum.update(member.counters["level_wrong"] / member.counters["level_scored"])
            member.counters["level_wrong"] = member.counters["level_scored"] = 0

    # ---------------------------------------------------------------- checks
    @torch.no_grad()
    def training_errors(self) -> Tensor:
        """Each member's per-cell error over all training lengths ``[P]``, member i on the examples
        an ordinary run with its seed is checked on (``eval_examples`` per length): soft, or with
        ``check_discrete`` the worse of soft and discrete at each length (as :meth:`Trainer.training_error`)."""
        config = self.config
        modes = (False, True) if config.check_discrete else (False,)
        errors = torch.zeros(config.population, dtype=torch.float64)
        self.model.eval()
        lengths = config.train_lengths()
        for n in lengths:
            errors += torch.stack([self._length_errors(n, discrete) for discrete in modes]).amax(0)
        self.model.train()
        return errors / len(lengths)

    def _length_errors(self, n: int, discrete: bool) -> Tensor:
        """Each member's per-cell error at length n ``[P]`` (float64), soft or discrete, as
        :func:`training.evaluate.evaluate` scores one length."""
        config, size = self.config, self.config.population
        memory_size = config.memory_size_for(n)
        wrong, scored = torch.zeros(size, dtype=torch.long), torch.zeros(size, dtype=torch.long)
        parts = [evaluation_batches(self.task, n, memory_size, config.eval_examples, member.config.seed)
                 for member in self.members]
        for chunk in zip(*parts):
            memory = torch.cat([batch.memory for batch in chunk]).to(self.device)
            output = final_memory(self.model, memory, config.timesteps_for(n), discrete).cpu()
            for index, batch in enumerate(chunk):
                rows = slice(index * batch.memory.shape[0], (index + 1) * batch.memory.shape[0])
                chunk_wrong, chunk_scored = cell_errors(output[rows], batch)
                wrong[index] += chunk_wrong.sum()
                scored[index] += chunk_scored.sum()
        return wrong.double() / scored.clamp_min(1)

    def check_due(self) -> bool:
        """A member's attempt ends (``restart_every``), exploitation is due (``exploit_every``), or an
        evaluation is (``eval_every``, so a member exact in between is found there)."""
        config = self.config
        if self.step == 0 or self.counters["checked_at"] == self.step:  # a resume at a checked step
            return False
        due = [config.eval_every, config.exploit_every, config.steps]  # the last step picks the best member
        if any(every and self.step % every == 0 for every in due):
            return True
        return any(self.member_attempt_ends(member) for member in self.members)

    def member_attempt_ends(self, member: Member) -> bool:
        """Whether ``member``'s attempt ends at this step (:func:`training.trainer.attempt_ends`)."""
        return attempt_ends(self.config, member.counters, self.step)

    def check_attempt(self) -> float:
        """Score every member; mark the exact ones solved; restart members whose attempt ended above
        ``restart_above``; replace the worst members when exploitation is due. Returns the best
        member's error."""
        config = self.config
        errors = self.training_errors()
        ending = [self.member_attempt_ends(member) for member in self.members]
        for index, member in enumerate(self.members):
            member.error = float(errors[index])
            member.counters["solved"] = int(member.error <= config.restart_above)
        self.best = int(torch.argmin(errors))
        self.counters["solved"] = int(errors[self.best] <= config.restart_above)
        best_error = float(errors[self.best])
        if (config.stop_when_solved and self.counters["solved"]) or self.step >= config.steps:
            return best_error  # the run ends here; a longer budget, resumed, checks again
        for index, member in enumerate(self.members):
            if ending[index] and not member.counters["solved"]:
                self.restart_member(index)
        if config.exploit_every and self.step % config.exploit_every == 0:
            self.exploit_and_explore(torch.tensor([member.error for member in self.members]))
        self.best = min(range(len(self.members)), key=lambda index: self.members[index].error)
        self.counters["checked_at"] = self.step
        return best_error

    def exploit_and_explore(self, errors: Tensor) -> None:
        """The worst ``exploit_fraction`` of the members (by ``errors`` ``[P]``) are replaced:
        ``floor(count * exploit_fresh)`` of them by fresh weights, spread evenly over the ranks
        (0.5: the second, fourth, ... least bad), the others by a perturbed copy of a random
        member of the best fraction."""
        count = max(1, int(self.config.exploit_fraction * self.config.population))
        share = self.config.exploit_fresh
        order = torch.argsort(errors, stable=True).tolist()
        best, worst = order[:count], order[-count:]
        for rank, index in enumerate(worst):
            if math.floor((rank + 1) * share) > math.floor(rank * share):
                self.restart_member(index)
            else:
                self.copy_member(best[int(torch.randint(count, (), generator=self.choice_generator))], index)

    # ---------------------------------------------------------------- checkpoints
    @property
    def population_path(self) -> Path:
        """``out_dir/population.pt``."""
        return self.out_dir / POPULATION_NAME

    def state(self) -> dict[str, Any]:
        """The whole population, enough to continue it exactly."""
        return {"config": self.config.to_dict(), "step": self.step, "best": self.best, "seconds": self.wall_seconds(),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "counters": dict(self.counters), "choice_rng": self.choice_generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "members": [{"config": m.config.to_dict(), "curriculum": m.curriculum.state_dict(),
                             "data_rng": m.data_generator.get_state(), "noise_rng": m.noise_generator.get_state(),
                             "gumbel_rng": m.gumbel_generator.get_state(), "counters": dict(m.counters),
                             "error": m.error} for m in self.members]}

    def member_checkpoint(self, index: int) -> dict[str, Any]:
        """Member ``index`` as an ordinary run's checkpoint (see :meth:`Trainer.state`); a gated
        controller's gate monitor starts there afresh (a population keeps none)."""
        member = self.members[index]
        model = self.model.member_model(index)
        optimizer = build_optimizer(member.config, model)
        state = optimizer.state_dict()
        state["state"] = {key: {name: value.to(self.device) for name, value in slots.items()}
                          for key, slots in self.optimizer.member_state(index).items()}
        monitor = GateAdaptation(model, gate_probes(member.config, self.device)) \
            if member.config.controller == "gated" else None
        data_rng = member.data_generator.get_state()
        return {"config": member.config.to_dict(), "step": self.step, "seconds": self.wall_seconds(),
                "model": model.state_dict(),
                "optimizer": state, "curriculum": member.curriculum.state_dict(),
                "rng": {"data": data_rng, "noise": member.noise_generator.get_state(),
                        "dropout": torch.Generator(device=self.device).manual_seed(member.config.seed + 2).get_state(),
                        "torch": torch.get_rng_state(), "data_by_rank": [data_rng],
                        "gumbel_by_rank": [member.gumbel_generator.get_state()]},
                "trainer": dict(member.counters), "gate_monitor": monitor.state_dict() if monitor else {}}

    def save(self) -> Path:
        """Write ``population.pt`` and the best member as ``checkpoint.pt``; returns the latter's path."""
        save_checkpoint(self.population_path, self.state())
        save_checkpoint(self.checkpoint_path, self.member_checkpoint(self.best))
        return self.checkpoint_path

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue a population from ``population.pt``."""
        check_same_run(payload, self.config, self.population_path, ("population", *ARCHITECTURE_KEYS))
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.choice_generator.set_state(payload["choice_rng"])
            torch.set_rng_state(payload["torch_rng"])
            for index, (member, saved_member) in enumerate(zip(self.members, payload["members"])):
                saved_config = saved_member["config"]
                ranged = {name: saved_config.get(name, getattr(self.config, name)) for name in RANGED_SETTINGS}
                member.config = member_config(self.config, index, **ranged)  # this run's steps, saved hyperparameters
                member.curriculum.load_state_dict(saved_member["curriculum"])
                member.data_generator.set_state(saved_member["data_rng"])
                member.noise_generator.set_state(saved_member["noise_rng"])
                if "gumbel_rng" in saved_member:  # absent from populations older than the Gumbel choices
                    member.gumbel_generator.set_state(saved_member["gumbel_rng"])
                member.counters = dict(saved_member["counters"])
                member.error = float(saved_member["error"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise CheckpointError(f"{self.population_path} does not fit this population: {error}") from None
        self.step = int(payload["step"])
        self.earlier_seconds = float(payload.get("seconds", 0.0))
        self.best = int(payload["best"])
        self.counters.update(payload["counters"])

    # ---------------------------------------------------------------- logs
    def weights_key(self) -> tuple[int, ...]:
        """The best member's weights: the population's (:meth:`Trainer.weights_key`) and which member is best."""
        return (*super().weights_key(), self.best)

    def _score(self, lengths: list[int], discrete: bool, examples: int) -> list[dict]:
        """Error by length of the best member, on the examples its seed draws."""
        return evaluate(self.model.member_model(self.best), self.task, lengths,
                        memory_size_for=self.config.memory_size_for, timesteps_for=self.config.timesteps_for,
                        examples=examples, discrete=discrete, seed=self.members[self.best].config.seed,
                        device=self.device)

    def _log_scalars(self, writer: SummaryWriter, stats: dict[str, Any]) -> None:
        for index, member in enumerate(self.members):
            writer.add_scalar(f"member_{index}/loss", float(stats["loss"][index]), self.step)
            writer.add_scalar(f"member_{index}/cell_error", float(stats["cell_error"][index]), self.step)
            writer.add_scalar(f"member_{index}/lr", member.config.lr, self.step)
            writer.add_scalar(f"member_{index}/level", getattr(member.curriculum, "level", self.config.max_length),
                              self.step)
        best = self.best
        writer.add_scalar("train/loss", float(stats["loss"][best]), self.step)
        writer.add_scalar("train/cell_error", float(stats["cell_error"][best]), self.step)
        writer.add_scalar("train/grad_norm", float(stats["grad_norm"][best]), self.step)
        writer.add_scalar("train/best_member", best, self.step)
        writer.add_scalar("train/restarts", self.counters["restarts"], self.step)
        writer.add_scalar("train/exploited", self.counters["exploited"], self.step)
        writer.add_scalar("curriculum/level", self.curriculum_level, self.step)

    def reported_model(self) -> NRAM:
        """The best member, as an ordinary model."""
        return self.model.member_model(self.best)

    def _log_evaluation(self, writer: SummaryWriter, heatmaps: MemoryHeatmaps | None) -> list[dict]:
        for index, member in enumerate(self.members):
            if math.isfinite(member.error):
                writer.add_scalar(f"member_{index}/train_error", member.error, self.step)
        return super()._log_evaluation(writer, heatmaps)
