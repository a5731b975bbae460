"""What a new user meets first: help, version, a run that says how it ended, results.json, one
TensorBoard history across resumes, eval without --lengths, the README's torchrun command."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from training.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "4", "--seed", "0"]


def test_version_and_help_with_defaults(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert capsys.readouterr().out.startswith("nram ")
    text = help_text(capsys, "eval")
    assert "(default: 1000)" in text and "(default: the longest training length" in text
    assert "None" not in text
    text = help_text(capsys, "train")
    assert "--seed SEED seeds weights" in text and "--lr LR learning rate" in text


def help_text(capsys, command):
    """``nram COMMAND --help`` as one line of words."""
    try:
        main([command, "--help"])
    except SystemExit:
        pass
    return " ".join(capsys.readouterr().out.split())


def test_a_run_ends_with_one_true_sentence_and_writes_results_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "ListK", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"writing {out.resolve()}" in printed.splitlines()[0]
    summary = json.loads((out / "results.json").read_text())
    assert summary["task"] == "listk" and summary["steps"] == 4 and summary["solved"] is False
    assert summary["sentence"] in printed and "docs/harder.md" in summary["sentence"]
    assert "cell error by length 1: " in summary["sentence"]
    assert [r["length"] for r in summary["discrete"]] == [5, 10, 20]
    assert {r["mode"] for r in summary["soft"]} == {"soft"} and summary["wall_seconds"] > 0
    assert summary["rescaled_gates"] is True  # scripts/reproduce_table.py --existing dates the run by it


def test_a_solved_run_says_so_and_a_resume_of_it_says_why_it_trains_no_more(tmp_path, capsys):
    config = tmp_path / "always.toml"
    config.write_text('task = "access"\nmax_length = 3\nrestart_above = 1.0\nstop_when_solved = true\n'
                      'eval_every = 2\neval_examples = 16\nsteps = 50\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    assert "solved: at most 100.0% wrong at every training length (1..3) at step 2" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["steps"] == 2
    assert main(["train", "--out", str(out), "--resume", "--steps", "80"]) == 0
    assert "was solved at step 2: nothing to train" in capsys.readouterr().out


def test_a_resume_continues_one_tensorboard_history(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--task", "access", "--steps", "50", "--out", str(out)]) == 0
    at_50 = (out / "checkpoint.pt").read_bytes()
    assert main(["train", "--out", str(out), "--resume", "--steps", "100"]) == 0
    (out / "checkpoint.pt").write_bytes(at_50)  # as if killed after logging step 100, before its checkpoint
    assert main(["train", "--out", str(out), "--resume", "--steps", "100"]) == 0
    events = EventAccumulator(str(out), size_guidance={"scalars": 0})
    events.Reload()
    steps = [event.step for event in events.Scalars("train/loss")]
    assert steps == [50, 100]  # step 100 once, from the run that finished


@pytest.mark.parametrize("population", [1, 2])
def test_a_resumed_runs_wall_time_adds_the_earlier_process_to_its_last_checkpoint(tmp_path, population):
    out = tmp_path / "run"
    assert main(["train", "--task", "access", *TINY, "--population", str(population), "--out", str(out)]) == 0
    name = "population.pt" if population > 1 else "checkpoint.pt"
    earlier = torch.load(out / name, weights_only=False)["seconds"]
    first = json.loads((out / "results.json").read_text())["wall_seconds"]
    assert 0 < earlier <= first
    started = time.perf_counter()
    assert main(["train", "--out", str(out), "--resume", "--steps", "8"]) == 0
    resumed = time.perf_counter() - started
    wall = json.loads((out / "results.json").read_text())["wall_seconds"]
    assert earlier + 0.9 * resumed <= wall <= earlier + resumed + 0.01


def test_eval_defaults_to_1x_2x_and_4x_the_longest_training_length(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "copy", *TINY, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt"), "--examples", "10"]) == 0
    lengths = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()[2:]]
    assert lengths == [6, 12, 24]


def test_the_readme_torchrun_command_runs_from_the_repository_root(tmp_path):
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("torchrun "))
    command = line.split("#")[0].split()
    assert command[:4] == ["torchrun", "--nproc_per_node=2", "-m", "training.cli"]
    out = tmp_path / "ddp"
    arguments = command[4:command.index("--out")] + ["--out", str(out), "--steps", "2"]
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m",
                             "training.cli", *arguments], cwd=ROOT, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "checkpoint.pt").exists() and "ModuleNotFoundError" not in result.stderr
