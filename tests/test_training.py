"""Training end to end: the CLI, TensorBoard events, exact resume, NaN guard, bad input."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from training.checkpoint import load_checkpoint
from training.cli import main
from training.config import TrainConfig
from training.signals import Interrupted
import training.trainer
from training.trainer import Trainer, TrainingDiverged

SMALL = dict(task="access", min_length=2, max_length=4, timesteps=3, timesteps_per_length=0.0,
             num_registers=2, hidden_size=16, batch_size=8, log_every=2, eval_every=4, eval_examples=16,
             checkpoint_every=4)


def write_config(path, **values):
    lines = [f"{key} = {json.dumps(value)}" for key, value in {**SMALL, **values}.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_cli_trains_evaluates_and_runs_an_example(tmp_path, capsys):
    config = write_config(tmp_path / "access.toml")
    out = tmp_path / "run"
    assert main(["train", "--config", config, "--steps", "8", "--out", str(out)]) == 0
    checkpoint = out / "checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["step"] == 8

    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(checkpoint), "--lengths", "2,8", "--examples", "20",
                 "--discrete", "--json", str(report)]) == 0
    results = json.loads(report.read_text())
    assert results["task"] == "access"
    assert [(r["length"], r["memory_size"], r["mode"], r["examples"]) for r in results["results"]] == \
        [(2, 4, "discrete", 20), (8, 10, "discrete", 20)]
    assert all(0 <= r["cell_error"] <= 1 and 0 <= r["example_accuracy"] <= 1 for r in results["results"])

    assert main(["run", "--checkpoint", str(checkpoint), "--length", "3"]) == 0
    shown = capsys.readouterr().out
    assert "memory before:" in shown and "step 1: read(" in shown and "target:" in shown


def test_cli_says_the_budget_of_a_run_that_stops_when_solved_and_how_it_ended(tmp_path, capsys):
    solved = write_config(tmp_path / "solved.toml", restart_every=2, restart_above=1.0, stop_when_solved=True)
    assert main(["train", "--config", solved, "--steps", "8", "--out", str(tmp_path / "solved")]) == 0
    shown = capsys.readouterr().out
    assert "for a budget of 8 steps in attempts of 2, stopping at the first check that finds it at most 100.0% " \
           "wrong" in shown
    assert "solved: at most 100.0% wrong at every training length (2..4) at step 2, after 0 restarts" in shown
    stuck = write_config(tmp_path / "stuck.toml", restart_every=2, restart_above=0.0, stop_when_solved=True)
    assert main(["train", "--config", stuck, "--steps", "4", "--out", str(tmp_path / "stuck")]) == 0
    shown = capsys.readouterr().out
    assert "stopping at the first check that finds it exact" in shown and "not solved after 4 steps and 1 restart;" in shown


def test_cli_rejects_a_bad_nram_native_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NRAM_NATIVE", "train")
    out = tmp_path / "run"
    assert main(["train", "--config", write_config(tmp_path / "a.toml"), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "NRAM_NATIVE must be one of 1, infer, 0, got 'train'" in captured.err and "training" not in captured.out
    assert not out.exists()


def test_cli_without_a_c_compiler_warns_in_one_line_and_still_evaluates(tmp_path):
    config = write_config(tmp_path / "access.toml")
    out = tmp_path / "run"
    assert main(["train", "--config", config, "--steps", "2", "--out", str(out)]) == 0
    env = {**os.environ, "CC": "false", "NRAM_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "training.cli", "eval", "--checkpoint", str(out / "checkpoint.pt"),
                             "--lengths", "2", "--examples", "8"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "nram: warning: the native CPU step is unavailable (false failed: exit code 1); running the "
        "slower PyTorch step. Set NRAM_NATIVE=0 to choose it and silence this warning."]
    assert "cell error" in result.stdout


def test_a_run_ending_on_an_evaluation_step_draws_its_memory_there(tmp_path):
    """Access stops when solved at a check, which is also an evaluation step: its last evaluation
    must carry the heatmaps, however far it is from a multiple of image_every."""
    out = tmp_path / "run"
    Trainer(TrainConfig(**{**SMALL, "eval_every": 3}, image_every=100, steps=6), out, progress=False).train()
    events = EventAccumulator(str(out), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("memory/length_4")] == [6]


def test_tensorboard_events_hold_scalars_images_and_hparams(tmp_path):
    out = tmp_path / "run"
    Trainer(TrainConfig(**{**SMALL, "eval_every": 3}, image_every=6, steps=13), out, progress=False).train()
    events = EventAccumulator(str(out), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/cell_error", "train/grad_norm", "train/lr", "curriculum/level",
                "eval/cell_error_length_4", "eval/cell_error_length_8"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12, 13]
    assert [e.step for e in events.Scalars("eval/cell_error_length_4")] == [3, 6, 9, 12, 13]
    for length in (4, 8, 16):  # the final table's discrete errors, at the end only
        assert [e.step for e in events.Scalars(f"eval/discrete_cell_error_length_{length}")] == [13], length
    for tag in ("memory/length_4", "memory/length_8"):  # at the first evaluation from each 6 steps on, and the last
        assert [e.step for e in events.Images(tag)] == [6, 12, 13], tag
    image = events.Images("memory/length_4")[-1]
    assert image.width > 600 and image.height > 200  # a labelled figure, not a raw M x 3M bitmap
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert "hparam/cell_error_length_8" in tags["scalars"]


@pytest.mark.parametrize("optimizer, extra", [("adam", {}), ("sgd", {}), ("adam", {"entropy_bonus": 0.0}),
                                              ("adam", {"gumbel_temperature": 0.5, "check_discrete": True}),
                                              ("adam", {"timesteps_jitter": 1.0})])
def test_resume_continues_bit_for_bit(tmp_path, optimizer, extra):
    """Entropy bonus 0: the rollouts run in one C call (Trainer.native_rollouts)."""
    settings = {**dict(SMALL, optimizer=optimizer, lr=0.05, gradient_noise=0.05, entropy_bonus=0.01, log_every=3),
                **extra}
    straight = Trainer(TrainConfig(**settings, steps=10), tmp_path / "straight", progress=False)
    straight.train()
    Trainer(TrainConfig(**settings, steps=5), tmp_path / "split", progress=False).train()
    resumed = Trainer(TrainConfig(**settings, steps=10), tmp_path / "split", resume=True, progress=False)
    assert resumed.step == 5
    resumed.train()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert straight.curriculum.state_dict() == resumed.curriculum.state_dict()
    assert straight.counters["skipped_steps"] == resumed.counters["skipped_steps"] == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_step_ends_the_run_after_that_step_and_resume_is_bit_for_bit(tmp_path, monkeypatch, signum):
    settings = dict(SMALL, gradient_noise=0.05)
    straight = Trainer(TrainConfig(**settings, steps=8), tmp_path / "straight", progress=False)
    straight.train()
    trainer = Trainer(TrainConfig(**settings, steps=8), tmp_path / "split", progress=False)
    original = trainer.train_step

    def signalled_step():
        if trainer.step == 3:
            os.kill(os.getpid(), signum)  # arrives inside the step, after its batch is drawn
        return original()

    monkeypatch.setattr(trainer, "train_step", signalled_step)
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as stopped:
        trainer.train()
    assert stopped.value.exit_code == 128 + signum
    assert signal.getsignal(signum) is before  # the handler is put back
    resumed = Trainer(TrainConfig(**settings, steps=8), tmp_path / "split", resume=True, progress=False)
    assert resumed.step == 4  # the step the signal landed in was finished, then saved
    resumed.train()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_a_signal_during_the_final_evaluation_still_leaves_the_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(TrainConfig(**SMALL, steps=4), tmp_path, progress=False)
    original = trainer._log_evaluation

    def signalled_evaluation(*args):
        os.kill(os.getpid(), signal.SIGINT)
        return original(*args)

    monkeypatch.setattr(trainer, "_log_evaluation", signalled_evaluation)
    with pytest.raises(Interrupted, match="at the end of the run"):
        trainer.train()
    assert Trainer(TrainConfig(**SMALL, steps=4), tmp_path, resume=True, progress=False).step == 4


def test_evaluation_scores_each_length_once_per_weights(tmp_path, monkeypatch):
    trainer = Trainer(TrainConfig(**SMALL), tmp_path, progress=False)
    trainer.train_step()
    scored = []
    real = training.trainer.evaluate
    monkeypatch.setattr(training.trainer, "evaluate", lambda model, task, lengths, **options:
                        scored.append(list(lengths)) or real(model, task, lengths, **options))
    first = trainer.evaluate([2, 3])
    assert trainer.evaluate([3, 4]) and scored == [[2, 3], [4]]
    assert trainer.evaluate([3], discrete=True) and trainer.evaluate([3], examples=8) and scored[2:] == [[3], [3]]
    reference = real(trainer.model, trainer.task, [2, 3], memory_size_for=trainer.config.memory_size_for,
                     timesteps_for=trainer.timesteps_for, examples=SMALL["eval_examples"], seed=0)
    assert first == reference
    def shift_a_bias():
        with torch.no_grad():
            trainer.model.controller.readout.bias.add_(1.0)

    for change in (trainer.train_step, trainer.restart, shift_a_bias):
        scored.clear()
        change()
        trainer.evaluate([2])
        assert scored == [[2]]


def test_nan_guard_skips_steps_then_aborts_with_a_clear_message(tmp_path):
    trainer = Trainer(TrainConfig(**SMALL, steps=50, nan_patience=3), tmp_path, progress=False)
    with torch.no_grad():
        trainer.model.controller.readout.bias.fill_(float("nan"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="NaN/inf for 3 steps in a row"):
        trainer.train()
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k], ) or torch.isnan(before[k]).any() for k in before)
    assert trainer.counters["skipped_steps"] == 3


def test_corrupt_truncated_and_foreign_checkpoints_give_clear_errors(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(TrainConfig(**SMALL, steps=2), out, progress=False).train()
    good = (out / "checkpoint.pt").read_bytes()
    cases = {"garbage.pt": b"not a checkpoint at all", "truncated.pt": good[: len(good) // 2],
             "text.pt": b"junk\n"}  # read as a pickle, 'j' looks up a memo entry that is not there
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert main(["eval", "--checkpoint", str(tmp_path / name), "--lengths", "2"]) == 2
        assert "not a readable checkpoint" in capsys.readouterr().err
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    assert main(["eval", "--checkpoint", str(tmp_path / "foreign.pt"), "--lengths", "2"]) == 2
    assert "not an nram checkpoint" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--lengths", "2"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_resuming_with_a_different_architecture_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(TrainConfig(**SMALL, steps=2), out, progress=False).train()
    with pytest.raises(ValueError, match="hidden_size=16, this run has hidden_size=32"):
        Trainer(TrainConfig(**{**SMALL, "hidden_size": 32}, steps=4), out, resume=True, progress=False)
    assert main(["train", "--task", "copy", "--out", str(out), "--resume"]) == 2
    assert "does not match the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("task = 'access'\nlearning_rate = 0.1\n", "unknown setting(s) learning_rate"),
    ("task = 'access\n", "not valid TOML"),
    ("task = 'access'\nmin_length = 5\nmax_length = 2\n", "min_length <= max_length"),
    ("task = 'sorting'\n", "unknown task 'sorting'"),
    ("task = 'access'\noptimizer = 'lbfgs'\n", "unknown optimizer 'lbfgs'"),
])
def test_bad_config_gives_a_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert message in capsys.readouterr().err


def test_unknown_task_on_the_command_line(tmp_path, capsys):
    assert main(["train", "--task", "sorting", "--out", str(tmp_path)]) == 2
    assert "unknown task 'sorting'" in capsys.readouterr().err


@pytest.mark.parametrize("settings", [
    dict(dropout="batchwise", dropout_p=0.5, hidden_size=32),
    dict(dropout="samplewise", dropout_p=0.25, hidden_size=32),
    dict(controller="gated", controller_options={"gating": "soft", "beta": 4.0}),
    dict(controller="gated", controller_options={"gating": "decoupled", "adaptive": False}),
])
def test_dropout_and_gated_controllers_train_log_and_resume_exactly(tmp_path, settings):
    config = dict(SMALL, **settings)
    straight = Trainer(TrainConfig(**config, steps=6), tmp_path / "straight", progress=False)
    straight.train()
    Trainer(TrainConfig(**config, steps=3), tmp_path / "split", progress=False).train()
    resumed = Trainer(TrainConfig(**config, steps=6), tmp_path / "split", resume=True, progress=False)
    resumed.train()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    events = EventAccumulator(str(tmp_path / "straight"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert any(tag.startswith("chaos/J/") for tag in scalars)
    assert ("gates/flipped_fraction" in scalars) == (settings.get("controller") == "gated")


def test_frozen_gates_do_not_move_during_training(tmp_path):
    config = dict(SMALL, controller="gated", controller_options={"gating": "decoupled", "adaptive": False})
    trainer = Trainer(TrainConfig(**config, steps=5), tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    gating = [k for k in before if "gating" in k]
    assert gating and all(torch.equal(before[k], after[k]) for k in gating)
    assert not all(torch.equal(before[k], after[k]) for k in before if k not in gating)


def test_chaos_sweep_writes_a_phase_diagram_and_recommends_weight_decay(tmp_path, capsys):
    config = write_config(tmp_path / "access.toml")
    out = tmp_path / "chaos"
    assert main(["chaos", "--task", "access", "--config", config, "--lrs", "0.05,0.5", "--weight-decays", "0,0.01",
                 "--steps", "6", "--every", "2", "--out", str(out)]) == 0
    assert (out / "phase.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "phase.json").read_text())
    assert {(r["lr"], r["weight_decay"]) for r in report["records"]} == {(0.05, 0), (0.5, 0), (0.05, 0.01), (0.5, 0.01)}
    assert all(r["steps"] == [0, 2, 4, 6] and len(r["J_trajectory"]) == 4 for r in report["records"])
    assert set(report["recommended_weight_decay"]) == {"0.05", "0.5"}
    assert "recommended weight decay at lr 0.05" in capsys.readouterr().out


def test_random_bases_descent_trains_from_the_command_line(tmp_path):
    config = write_config(tmp_path / "access.toml")
    out = tmp_path / "rbd"
    assert main(["train", "--config", config, "--steps", "4", "--optimizer", "rbd", "--lr", "1.0",
                 "--rbd-dims", "16", "--rbd-compartments", "3", "--out", str(out)]) == 0
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["config"]["optimizer_options"] == {"dims": 16, "compartments": 3}
    assert all(state["step"] == 4 for state in saved["optimizer"]["state"].values())


@pytest.mark.parametrize("flags, expected", [
    (["--dropout", "batchwise", "--dropout-p", "0.25"], {"dropout": "batchwise", "dropout_p": 0.25}),
    (["--controller", "gated"], {"controller": "gated"}),
])
def test_controller_and_dropout_flags_reach_the_config(tmp_path, flags, expected):
    config = write_config(tmp_path / "access.toml", hidden_size=32)
    out = tmp_path / "run"
    assert main(["train", "--config", config, "--steps", "2", "--out", str(out), *flags]) == 0
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    assert {key: saved[key] for key in expected} == expected


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_nram_train_stopped_by_a_signal_from_outside_resumes_bit_for_bit(tmp_path, signum):
    config = write_config(tmp_path / "run.toml", steps=300, checkpoint_every=1000, eval_every=1000)
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    train = [sys.executable, "-m", "training.cli", "train", "--config", config]
    subprocess.run([*train, "--out", str(tmp_path / "straight")], check=True, env=environment, capture_output=True)
    stopped = subprocess.Popen([*train, "--out", str(tmp_path / "split")], env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert stopped.stdout.readline().startswith("training ")  # set up and training
    progress = ""  # signal once the bar shows a step taken: a fixed wait can outlast 300 quick steps
    while not re.search(r"\b[1-9]\d*/300\b", progress):
        character = stopped.stderr.read(1)
        assert character, f"the run ended before showing a step: {progress}"
        progress += character
    stopped.send_signal(signum)
    _, rest = stopped.communicate(timeout=120)
    error = progress + rest
    assert stopped.returncode == 128 + signum, error
    assert f"{signal.Signals(signum).name} at step" in error and "continue with --resume" in error
    step = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"]
    assert 0 < step < 300
    subprocess.run([*train[:-2], "--out", str(tmp_path / "split"), "--resume"], check=True, env=environment,
                   capture_output=True)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert resumed["step"] == straight["step"] == 300
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert torch.equal(straight["rng"]["data"], resumed["rng"]["data"])


def test_training_and_report_lengths_come_from_the_config():
    config = TrainConfig(task="copy", min_length=2, max_length=5)
    assert config.train_lengths() == [2, 3, 4, 5]
    assert config.report_lengths() == [5, 10, 20]  # what nram train's table, nram eval and reproduce_table score
