"""Bad input gets one line naming what is wrong (exit 2), before any work, never a traceback or a
wrong answer. Each case below once crashed, ran on, or said something untrue."""

import errno
import subprocess
import sys

import pytest
import torch

from training.checkpoint import CheckpointError, locked_run_directory, save_checkpoint
from training.cli import main
from training.config import AT_LEAST_ONE_SETTINGS, NON_NEGATIVE_SETTINGS, TrainConfig


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "copy"
    assert main(["train", "--task", "copy", "--steps", "2", "--out", str(out)]) == 0
    return str(out / "checkpoint.pt")


@pytest.mark.parametrize("arguments, message", [
    (["--examples", "0"], "--examples needs at least 1"),
    (["--examples", "-5"], "--examples needs at least 1"),
    (["--device", "tpu"], "device must be cpu, cuda or cuda:N"),
    (["--lengths", "0"], "--lengths needs values >= 1"),
])
def test_eval_refuses(checkpoint, capsys, arguments, message):
    assert main(["eval", "--checkpoint", checkpoint, *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_on_cuda_without_a_gpu_blames_the_machine_not_the_checkpoint(checkpoint, capsys):
    assert main(["eval", "--checkpoint", checkpoint, "--device", "cuda"]) == 2
    error = capsys.readouterr().err
    assert "torch sees no CUDA device" in error and "corrupt" not in error


def test_eval_json_into_a_missing_folder_creates_it(checkpoint, tmp_path):
    target = tmp_path / "new" / "folder" / "eval.json"
    assert main(["eval", "--checkpoint", checkpoint, "--examples", "4", "--json", str(target)]) == 0
    assert target.exists()


@pytest.mark.parametrize("arguments, message", [
    (["--every", "0"], "--steps and --every must be >= 1"),
    (["--steps", "0"], "--steps and --every must be >= 1"),
])
def test_chaos_refuses(capsys, tmp_path, arguments, message):
    assert main(["chaos", "--task", "copy", "--out", str(tmp_path / "c"), *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--device", "tpu"], "device must be cpu, cuda or cuda:N"),
    (["--threads", "-1"], "threads must be >= 0"),
    (["--population", "0"], "population must be >= 1"),
    (["--steps", "0"], "--steps is the step budget and must be >= 1, got 0"),
    (["--task", "nosuch"], "unknown task 'nosuch'"),
])
def test_train_flags_are_refused_before_any_work(capsys, tmp_path, arguments, message):
    out = tmp_path / "run"
    assert main(["train", "--task", "copy", "--out", str(out), *arguments]) == 2  # a repeated flag: the last wins
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("setting, message", [
    ('steps = "2"', "steps must be of type int"),
    ("lr = inf", "lr must be a finite number"),
    ("clip_norm = nan", "clip_norm must be a finite number"),
    ("gradient_noise = nan", "gradient_noise must be a finite number"),
    ("max_length = 100000", "GiB per step"),
    ('controller_options = { widht = 3 }', "does not take these options ['widht']"),
    ("population = 2\npopulation_ranges = { lr = [0.1] }", "population_ranges.lr must be [low, high]"),
])
def test_bad_config_values_are_refused_before_any_work(capsys, tmp_path, setting, message):
    config = write(tmp_path / "bad.toml", f'task = "copy"\n{setting}\n')
    out = tmp_path / "run"
    assert main(["train", "--config", config, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name, bound", [*((name, 0) for name in NON_NEGATIVE_SETTINGS),
                                         *((name, 1) for name in AT_LEAST_ONE_SETTINGS)])
def test_a_setting_below_its_bound_is_named_alone(name, bound):
    """Each out-of-range count names itself, not a list of every setting with that bound."""
    config = TrainConfig(task="copy", **{name: bound - 1})
    with pytest.raises(ValueError) as error:
        config.validate()
    assert str(error.value) == f"{name} must be >= {bound}, got {bound - 1}"


def test_validating_a_config_leaves_the_random_state_and_imports_no_compiler():
    """Validation builds the model once: it must not draw from the global generator (seeded runs
    would shift) nor import torch._dynamo (1.7 s that `nram eval` would pay)."""
    script = ("import sys, torch; from training.config import TrainConfig\n"
              "torch.manual_seed(0); expected = torch.rand(3); torch.manual_seed(0)\n"
              "TrainConfig(task='listk', controller='lstm').validate()\n"
              "assert torch.equal(torch.rand(3), expected)\n"
              "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_config_path_that_is_a_folder_is_refused(capsys, tmp_path):
    assert main(["train", "--config", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "cannot be read: IsADirectoryError" in capsys.readouterr().err


def test_out_naming_a_file_or_an_unwritable_place_is_refused(capsys, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["train", "--task", "copy", "--out", str(a_file)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert main(["train", "--task", "copy", "--out", str(a_file / "below")]) == 2
    assert "cannot write to" in capsys.readouterr().err


def test_two_runs_into_one_directory_the_second_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    with locked_run_directory(out):
        assert main(["train", "--task", "copy", "--steps", "2", "--out", str(out)]) == 2
    assert "in use by another nram run" in capsys.readouterr().err
    assert main(["train", "--task", "copy", "--steps", "2", "--out", str(out)]) == 0  # the lock went with it


def test_resume_with_another_config_is_refused(checkpoint, capsys, tmp_path):
    out = str(tmp_path / "whatever")
    assert main(["train", "--resume", "--out", out, "--config", write(tmp_path / "a.toml", 'task = "copy"\n')]) == 2
    assert "--config cannot change it" in capsys.readouterr().err


def test_task_names_ignore_case_and_keep_the_shipped_config(capsys, tmp_path):
    assert main(["train", "--task", "COPY", "--steps", "1", "--out", str(tmp_path / "run")]) == 0
    assert "copy (lengths 1..6" in capsys.readouterr().out


def test_a_full_disk_is_a_clear_error_that_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint there, if any, is intact"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_rollout_loss_names_targets_outside_the_memory_values():
    from nram.model import NRAM, MachineConfig, rollout_loss
    rollout = NRAM(MachineConfig(num_registers=2))(torch.zeros(2, 5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="target cells must hold values in 0..4, got values from 7 to 7"):
        rollout_loss(rollout, torch.full((2, 5), 7), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"target and mask must be \[B, M\] = \[2, 5\]"):
        rollout_loss(rollout, torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool))


def test_the_nan_guard_names_a_checkpoint_only_if_one_exists(tmp_path):
    from training.config import TrainConfig
    from training.trainer import Trainer, TrainingDiverged
    trainer = Trainer(TrainConfig(task="access", max_length=3, nan_patience=2, steps=10), tmp_path, progress=False)
    with torch.no_grad():
        trainer.model.controller.readout.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="No checkpoint was written before it"):
        trainer.train()
