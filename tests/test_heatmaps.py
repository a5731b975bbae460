"""The memory heatmaps: what they show, drawn beside training on their own thread, a failure never costing the run."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import training.figures
from nram.model import NRAM
from tasks import get_task
from training.config import TrainConfig
from training.heatmaps import MemoryHeatmaps, memory_panels
from training.trainer import Trainer

SMALL = dict(task="access", min_length=2, max_length=4, timesteps=3, timesteps_per_length=0.0,
             num_registers=2, hidden_size=16, batch_size=8, log_every=2, eval_every=4, eval_examples=16,
             checkpoint_every=4, steps=4)


def test_the_panels_are_the_input_the_output_distribution_and_the_target():
    config = TrainConfig(**SMALL)
    torch.manual_seed(0)
    model = NRAM(config.machine_config()).eval()
    task = get_task("access")
    panels, scored = memory_panels(model, task, 3, 8, 4, seed=5, device="cpu")
    batch = task.sample(1, 3, 8, torch.Generator().manual_seed(5))
    (_, initial), (_, output), (_, target) = panels
    assert [title for title, _ in panels] == ["initial memory", "output after up to 4 steps", "target"]
    assert np.array_equal(initial.argmax(1), batch.memory[0].numpy()) and np.array_equal(initial.sum(1), np.ones(8))
    assert np.array_equal(target.argmax(1), batch.target[0].numpy()) and np.array_equal(target.sum(1), np.ones(8))
    assert np.allclose(output.sum(1), 1.0, atol=1e-5) and (output >= 0).all()
    assert scored == batch.mask[0].nonzero().flatten().tolist()


def test_heatmaps_are_drawn_off_the_training_thread_and_logged_at_their_step(tmp_path, monkeypatch):
    drawn_on = []
    draw = training.figures.memory_image

    def recording(*args):
        drawn_on.append(threading.current_thread())
        return draw(*args)

    monkeypatch.setattr(training.figures, "memory_image", recording)
    Trainer(TrainConfig(**SMALL), tmp_path, progress=False).train()
    assert len(drawn_on) == 2 and threading.main_thread() not in drawn_on
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    for tag in ("memory/length_4", "memory/length_8"):
        (image,) = events.Images(tag)
        assert image.step == 4 and image.width > 600 and image.height > 200


def test_a_failed_drawing_is_reported_and_the_run_ends_as_usual(tmp_path, monkeypatch, capsys):
    def failing(*args):
        raise RuntimeError("no pictures today")

    monkeypatch.setattr(training.figures, "memory_image", failing)
    settings = dict(SMALL, steps=6, image_every=4, checkpoint_every=100)  # pictures at 4 and 6, one checkpoint
    Trainer(TrainConfig(**settings), tmp_path, progress=False).train()
    err = capsys.readouterr().err
    assert "the heatmap memory/length_4 at step 4 was not drawn: RuntimeError: no pictures today" in err
    assert "memory/length_8 at step 6" in err
    assert Trainer(TrainConfig(**settings), tmp_path, resume=True, progress=False).step == 6
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("eval/cell_error_length_4")] == [4, 6]
    assert "hparam/cell_error_length_8" in events.Tags()["scalars"]


def test_the_cli_starts_without_importing_matplotlib():
    """matplotlib's import (about a second) runs on the drawing thread, beside the first steps."""
    script = "import sys, training.cli; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"


def test_a_run_stopped_at_once_drops_the_pictures_not_yet_begun(tmp_path, monkeypatch):
    drawn = []

    def slow(*args):
        time.sleep(0.5)
        drawn.append(args[2])
        return np.zeros((4, 4, 3), dtype=np.uint8)

    monkeypatch.setattr(training.figures, "memory_image", slow)
    config = TrainConfig(**SMALL)
    model = NRAM(config.machine_config()).eval()
    writer = SummaryWriter(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with MemoryHeatmaps(writer) as heatmaps:
            heatmaps.log(model, get_task("access"), config, step=1, device="cpu")
            heatmaps.log(model, get_task("access"), config, step=2, device="cpu")
            raise KeyboardInterrupt
    assert len(drawn) <= 1  # at most the picture already being drawn; three or four were dropped
    writer.close()
