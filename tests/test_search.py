"""nram search: the [search] table, two workers on one SQLite study with pruning, the best
config trained again, and a search stopped by Ctrl-C that the same command continues."""

import fcntl
import signal
import subprocess
import sys
import time

import optuna
import pytest
import torch

from training.cli import main
from training.config import load_config
from training.search import ASK_LOCK_NAME, Search, _print_trial, storage_url
from training.search_space import search_space
from training.trainer import Trainer

CONFIG = """\
task = "access"
min_length = 1
max_length = 3
timesteps = 3
timesteps_per_length = 0.0
num_registers = 2
hidden_size = 16
batch_size = 16
steps = {steps}
eval_every = 20
log_every = 20
eval_examples = 32
checkpoint_every = 20
threads = 1

[search]
lr = [1e-8, 0.03]
"""
GOOD, HOPELESS = {"lr": 0.03}, {"lr": 1e-8}


def write_config(tmp_path, steps=100):
    path = tmp_path / "search.toml"
    path.write_text(CONFIG.format(steps=steps))
    return path


def test_a_search_table_becomes_parameters():
    parameters = search_space({"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "num_registers": {"low": 2, "high": 5},
                               "optimizer": ["adam", "sgd"], "hidden_size": {"low": 32, "high": 96, "step": 32}})
    by_name = {p.name: p for p in parameters}
    assert by_name["lr"].log and not by_name["lr"].is_int
    assert by_name["num_registers"].is_int and by_name["hidden_size"].step == 32
    assert by_name["optimizer"].choices == ("adam", "sgd")


@pytest.mark.parametrize("table, message", [
    (None, "needs a [search] table"),
    ({"learning_rate": [0.1]}, "learning_rate is not a setting"),
    ({"steps": [10, 20]}, "cannot be searched"),
    ({"lr": []}, "non-empty"),
    ({"lr": {"low": 0.1}}, "takes low, high"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "low < high"),
    ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "log range needs low > 0"),
    ({"lr": {"low": 0.1, "high": 1.0, "spread": 2}}, "takes low, high"),
    ({"lr": 0.1}, "list of choices or a table"),
])
def test_a_bad_search_table_is_refused_with_its_key(table, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        search_space(table)


def test_storage_urls(tmp_path):
    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'study.db'}"
    assert storage_url("postgresql+psycopg2://u:p@host/db", tmp_path).startswith("postgresql")
    with pytest.raises(ValueError, match="database URL"):
        storage_url("redis://host:6379", tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["--trials", "0"], "--trials and --workers must be >= 1"),
    (["--trials", "2", "--storage", "ftp://somewhere/db"], "database URL"),
])
def test_bad_search_arguments_are_clear_errors(tmp_path, capsys, argv, message):
    assert main(["search", "--config", str(write_config(tmp_path)), "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_two_workers_share_one_study_prune_and_the_best_config_trains_to_its_error(tmp_path, capsys):
    config_path, out = write_config(tmp_path), tmp_path / "search"
    out.mkdir()
    study = optuna.create_study(storage=storage_url(None, out), study_name="access", direction="minimize")
    # a fixed order, so the pruner's rungs fill predictably
    for params in (GOOD, HOPELESS, HOPELESS, GOOD, HOPELESS, HOPELESS):
        study.enqueue_trial(params)
    assert main(["search", "--config", str(config_path), "--trials", "6", "--workers", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    study = optuna.load_study(study_name="access", storage=storage_url(None, out))
    states = [trial.state.name for trial in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") >= 6
    assert "PRUNED" in states
    assert len({trial.user_attrs["worker"] for trial in study.trials}) == 2
    best = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: (t.value, t.number))
    assert f"{best.number:>5} {best.value:>8.4f}" in printed

    again = Trainer(load_config(out / "best.toml"), tmp_path / "again", progress=False)
    checks = []
    again.train(on_check=lambda step, error: checks.append(error) is not None)
    assert checks[-1] == best.value
    saved = torch.load(out / "best" / "checkpoint.pt", weights_only=True)["model"]
    for name, value in again.model.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_a_search_stopped_by_ctrl_c_continues_with_the_same_command(tmp_path):
    config_path, out = write_config(tmp_path, steps=200), tmp_path / "search"
    command = [sys.executable, "-m", "training.cli", "search", "--config", str(config_path), "--trials", "3",
               "--out", str(out)]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "trial-0000" / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    _, error = first.communicate(timeout=120)
    assert first.returncode == 130, error
    assert "run the same command to continue" in error
    stopped = optuna.load_study(study_name="access", storage=storage_url(None, out))
    interrupted = [trial for trial in stopped.trials if trial.state.name == "FAIL"]
    assert len(interrupted) == 1

    subprocess.run(command, check=True, capture_output=True, timeout=300)
    study = optuna.load_study(study_name="access", storage=storage_url(None, out))
    finished = [trial for trial in study.trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3  # none lost, none run twice
    retried = [trial for trial in finished if trial.user_attrs.get("retry_of") == interrupted[0].number]
    assert len(retried) == 1 and retried[0].params == interrupted[0].params


def test_a_pruned_trial_prints_as_pruned_though_optuna_gives_it_a_value(capsys):
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    for state, value in ((optuna.trial.TrialState.PRUNED, 0.53), (optuna.trial.TrialState.COMPLETE, 0.25)):
        _print_trial(None, optuna.trial.create_trial(params={"lr": 0.01}, distributions=distributions, value=value,
                                                     state=state, user_attrs={"steps": 250}))
    assert capsys.readouterr().out.splitlines() == ["trial -1: pruned, error 0.5300 at step 250 (lr 0.01)",
                                                    "trial -1: error 0.2500 at step 250 (lr 0.01)"]


def test_a_worker_holds_the_ask_lock_while_optuna_picks_its_trial_and_not_while_it_trains(tmp_path, monkeypatch):
    """SQLite cannot hand out a queued trial atomically (optuna#4621): local workers take turns."""
    out = tmp_path / "search"
    held = []

    def lock_is_held() -> bool:
        with open(out / ASK_LOCK_NAME, "a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(other, fcntl.LOCK_UN)
            return False

    ask = optuna.study.Study.ask
    monkeypatch.setattr(optuna.study.Study, "ask", lambda study, *a, **k: held.append(("ask", lock_is_held()))
                        or ask(study, *a, **k))
    objective = Search.objective
    monkeypatch.setattr(Search, "objective", lambda search, trial: held.append(("train", lock_is_held()))
                        or objective(search, trial))
    assert main(["search", "--config", str(write_config(tmp_path, steps=20)), "--trials", "2", "--out", str(out)]) == 0
    assert held == [("ask", True), ("train", False)] * 2
