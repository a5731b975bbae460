"""``nram search``: hyperparameter search with Optuna over a config's ``[search]`` table.

Each trial is one ``nram train`` run (its own folder ``trial-NNNN`` under the search's output)
with settings sampled from the table (:mod:`training.search_space`), scored by per-cell
training error under the protocol ``nram eval`` uses (every training length at M(n), T(n)).
The trial reports its error at every check (each ``eval_every`` steps); a successive-halving
pruner ends the hopeless ones there, and an exact trial stops at once.

The study lives in an Optuna storage: by default a SQLite file in the output folder, so the
same command continues it after Ctrl-C; any database URL (PostgreSQL, MySQL) lets processes
on many machines share one study. ``--workers W`` runs W local processes on it. A trial
interrupted by a signal is recorded as failed and its settings queued to run again; one whose
process died without a word is found by Optuna's heartbeat and retried the same way.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig, config_toml
from training.search_space import Parameter, trial_config
from training.population import PopulationTrainer
from training.signals import Interrupted
from training.trainer import CHECKPOINT_NAME, Trainer

STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
"""Database URL schemes ``--storage`` takes (with an optional driver, e.g. ``postgresql+psycopg2``)."""
HEARTBEAT_S = 60
"""A trial whose process sends no heartbeat for twice this long is failed and queued again."""
FINISHED = ("COMPLETE", "PRUNED")
"""Trial states that count towards ``--trials``."""
ASK_LOCK_NAME = ".ask.lock"
"""The file in the search's output that local workers lock while Optuna picks their next trial."""


def import_optuna() -> Any:
    """Optuna, or a ``ValueError`` that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise ValueError("nram search needs Optuna: pip install 'nram[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the heartbeat that finds trials whose process died is marked experimental, though stable since v2.9
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_url(storage: str | None, out: Path) -> str:
    """The study's database: ``storage`` if given (checked), else ``sqlite:///OUT/study.db``."""
    if storage is None:
        return f"sqlite:///{(out / 'study.db').resolve()}"
    scheme = storage.split("://", 1)[0] if "://" in storage else ""
    if scheme.split("+", 1)[0] not in STORAGE_SCHEMES:
        schemes = ", ".join(f"{name}://" for name in STORAGE_SCHEMES)
        raise ValueError(f"--storage {storage!r}: give a database URL starting {schemes} "
                         f"(e.g. postgresql://user:password@host/db)")
    return storage


@dataclass(frozen=True)
class Search:
    """What every worker of one search needs: the base config, the sampled settings, where the
    study lives and where trials write, and how many finished trials the study should reach."""

    base: TrainConfig
    parameters: tuple[Parameter, ...]
    storage: str
    study_name: str
    out: Path
    trials: int

    def load_study(self, create: bool = False) -> Any:
        """The Optuna study (created if ``create`` and absent): minimise error, successive halving
        with rungs at ``eval_every``, 2x, 4x ... steps."""
        optuna = import_optuna()
        storage = optuna.storages.RDBStorage(
            self.storage, heartbeat_interval=HEARTBEAT_S, grace_period=2 * HEARTBEAT_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None))
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=self.base.eval_every, reduction_factor=2)
        try:
            return optuna.create_study(storage=storage, study_name=self.study_name, direction="minimize",
                                       pruner=pruner, load_if_exists=create) if create else \
                optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
        except (ImportError, ModuleNotFoundError) as error:  # a driver the URL names is not installed
            raise ValueError(f"--storage {self.storage}: {error}") from None

    def finished(self, study: Any) -> int:
        """Trials of ``study`` that count towards ``trials`` (completed or pruned)."""
        return sum(trial.state.name in FINISHED for trial in study.trials)

    def objective(self, trial: Any) -> float:
        """Train one trial; its last checked error. Raises ``optuna.TrialPruned`` when pruned."""
        optuna = import_optuna()
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        config = trial_config(self.base, {p.name: p.suggest(trial) for p in self.parameters})
        out = self.out / f"trial-{trial.number:04d}"
        trial.set_user_attr("out", str(out))
        checks: list[tuple[int, float]] = []
        pruned = False

        def report(step: int, error: float) -> bool:
            nonlocal pruned
            checks.append((step, error))
            trial.report(error, step)
            pruned = error > 0 and trial.should_prune()
            return pruned

        trainer = (PopulationTrainer if config.population > 1 else Trainer)(config, out, progress=False)
        try:
            trainer.train(on_check=report)
        except Interrupted:
            trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        trial.set_user_attr("steps", trainer.step)
        if pruned:
            raise optuna.TrialPruned(f"error {checks[-1][1]:.4f} at step {trainer.step}")
        return checks[-1][1] if checks and checks[-1][0] == trainer.step else trainer.training_error()

    def work(self) -> None:
        """Run trials until the study has ``trials`` finished ones (a worker may overrun by the
        trials its peers have in flight).

        Optuna takes a queued trial (a retry, or one given with ``enqueue_trial``) without a row
        lock on SQLite, so two workers could take the same one and the second could not record
        its result (optuna/optuna#4621). The local workers therefore take turns, through a file
        lock, from the start of ``optimize`` until their trial has begun."""
        study = self.load_study()
        import_optuna().storages.fail_stale_trials(study)
        with open(self.out / ASK_LOCK_NAME, "a") as lock:
            def begun(trial: Any) -> float:
                fcntl.flock(lock, fcntl.LOCK_UN)
                return self.objective(trial)

            while self.finished(study) + _running(study) < self.trials:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    study.optimize(begun, n_trials=1, callbacks=[_print_trial])
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)


def _print_trial(study: Any, trial: Any) -> None:
    """One line per finished trial, so a long search shows its progress."""
    # Optuna gives a pruned trial its last reported error as its value, so the state decides.
    state = trial.state.name.lower()
    if trial.value is None:
        result = state
    elif state == "complete":
        result = f"error {trial.value:.4f}"
    else:
        result = f"{state}, error {trial.value:.4f}"
    params = ", ".join(f"{name} {_format(value)}" for name, value in trial.params.items())
    print(f"trial {trial.number}: {result} at step {trial.user_attrs.get('steps', '?')} ({params})", flush=True)


def _running(study: Any) -> int:
    return sum(trial.state.name == "RUNNING" for trial in study.trials)


def _work(search: Search) -> None:
    """A worker process: run trials, and leave quietly on Ctrl-C (the trial's checkpoint is saved)."""
    try:
        search.work()
    except (Interrupted, KeyboardInterrupt):
        pass


def run_search(search: Search, workers: int) -> Any:
    """Run the search on ``workers`` local processes (this one alone when 1); the study.
    Raises :class:`training.signals.Interrupted` (or ``KeyboardInterrupt``) when stopped by a signal."""
    study = search.load_study(create=True)
    if workers == 1:
        search.work()
        return study
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_work, args=(search,)) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return search.load_study()


def best_trials(study: Any, count: int = 5) -> list[Any]:
    """The completed trials with the lowest error, best first."""
    done = [trial for trial in study.trials if trial.state.name == "COMPLETE" and trial.value is not None]
    return sorted(done, key=lambda trial: (trial.value, trial.number))[:count]


def summary_table(study: Any, parameters: tuple[Parameter, ...], count: int = 5) -> str:
    """The best trials as a text table: number, error, steps, worker and the sampled settings."""
    states = {}
    for trial in study.trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    lines = ["trials: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())),
             f"{'trial':>5} {'error':>8} {'steps':>6}  " + "  ".join(p.name for p in parameters)]
    for trial in best_trials(study, count):
        values = "  ".join(_format(trial.params.get(p.name)) for p in parameters)
        lines.append(f"{trial.number:>5} {trial.value:>8.4f} {trial.user_attrs.get('steps', 0):>6}  {values}")
    return "\n".join(lines)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_best(study: Any, search: Search) -> tuple[Path, Path] | None:
    """Write the best trial's config as ``best.toml`` (``nram train --config`` takes it as it is)
    and copy its checkpoint to ``best/checkpoint.pt``; their paths, or None before any trial completed."""
    best = best_trials(study, 1)
    if not best:
        return None
    trial = best[0]
    config = trial_config(search.base, trial.params)
    toml_path = search.out / "best.toml"
    toml_path.write_text(config_toml(config, f"nram search, study {search.study_name!r}: trial {trial.number}, "
                                             f"per-cell training error {trial.value:.4f}\n"
                                             f"train it again with: nram train --config {toml_path}"))
    checkpoint = search.out / "best" / CHECKPOINT_NAME
    checkpoint.parent.mkdir(exist_ok=True)
    shutil.copyfile(Path(trial.user_attrs["out"]) / CHECKPOINT_NAME, checkpoint)
    return toml_path, checkpoint
