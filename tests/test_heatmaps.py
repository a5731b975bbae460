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

from nram.model import NRAM
from tasks import get_task
from training.config import TrainConfig
from training.figures import MemoryFigure
from training.heatmaps import MemoryHeatmaps, heatmap_example, output_panel
from training.trainer import Trainer

SMALL = dict(task="access", min_length=2, max_length=4, timesteps=3, timesteps_per_length=0.0,
             num_registers=2, hidden_size=16, batch_size=8, log_every=2, eval_every=4, eval_examples=16,
             checkpoint_every=4, steps=4)


def test_an_example_shows_the_input_the_output_distribution_and_the_target():
    config = TrainConfig(**SMALL)
    torch.manual_seed(0)
    model = NRAM(config.machine_config()).eval()
    task = get_task("access")
    example = heatmap_example(task, 3, 8, 4, seed=5, device="cpu")
    batch = task.sample(1, 3, 8, torch.Generator().manual_seed(5))
    assert example.panel_titles == ["initial memory", "output after up to 4 steps", "target"]
    assert np.array_equal(example.initial.argmax(1), batch.memory[0].numpy())
    assert np.array_equal(example.target.argmax(1), batch.target[0].numpy())
    assert np.array_equal(example.initial.sum(1), np.ones(8)) and np.array_equal(example.target.sum(1), np.ones(8))
    assert example.scored == batch.mask[0].nonzero().flatten().tolist()
    output = output_panel(model, example)
    assert np.allclose(output.sum(1), 1.0, atol=1e-5) and (output >= 0).all()
    assert np.allclose(output, model.output_memory(batch.memory, 4)[0].detach().numpy())


def test_a_redrawn_figure_is_the_figure_drawn_afresh():
    rng = np.random.default_rng(0)
    panels = [rng.random((6, 6)).astype(np.float32) for _ in range(3)]
    reused = MemoryFigure(["a", "b", "c"], 6, [1], "title")
    reused.image([np.zeros((6, 6), dtype=np.float32)] * 3)
    again = reused.image(panels)
    afresh = MemoryFigure(["a", "b", "c"], 6, [1], "title").image(panels)
    assert again.shape == afresh.shape and again.dtype == np.uint8 and again.shape[2] == 3
    assert np.array_equal(again, afresh)
    assert not np.array_equal(again, reused.image([p[::-1] for p in panels]))


def test_heatmaps_are_drawn_off_the_training_thread_and_logged_at_their_step(tmp_path, monkeypatch):
    drawn_on = []
    draw = MemoryFigure.image

    def recording(self, panels):
        drawn_on.append(threading.current_thread())
        return draw(self, panels)

    monkeypatch.setattr(MemoryFigure, "image", recording)
    Trainer(TrainConfig(**SMALL), tmp_path, progress=False).train()
    assert len(drawn_on) == 4 and threading.main_thread() not in drawn_on  # each figure drawn ahead, then logged
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    for tag in ("memory/length_4", "memory/length_8"):
        (image,) = events.Images(tag)
        assert image.step == 4 and image.width > 600 and image.height > 200


def test_a_failed_drawing_is_reported_and_the_run_ends_as_usual(tmp_path, monkeypatch, capsys):
    def failing(self, panels):
        raise RuntimeError("no pictures today")

    monkeypatch.setattr(MemoryFigure, "image", failing)
    settings = dict(SMALL, steps=6, image_every=4, checkpoint_every=100)  # pictures at 4 and 6, one checkpoint
    Trainer(TrainConfig(**settings), tmp_path, progress=False).train()
    err = capsys.readouterr().err
    assert "the heatmap memory/length_4 ahead of the run was not drawn: RuntimeError: no pictures today" in err
    assert "the heatmap memory/length_4 at step 4 was not drawn" in err
    assert "the heatmap memory/length_8 at step 6 was not drawn" in err
    assert Trainer(TrainConfig(**settings), tmp_path, resume=True, progress=False).step == 6
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("eval/cell_error_length_4")] == [4, 6]
    assert "hparam/cell_error_length_8" in events.Tags()["scalars"]


def test_a_run_stopped_at_once_drops_the_pictures_not_yet_begun(tmp_path, monkeypatch):
    draw = MemoryFigure.image

    def slow(self, panels):
        time.sleep(0.3)
        return draw(self, panels)

    monkeypatch.setattr(MemoryFigure, "image", slow)
    config = TrainConfig(**SMALL)
    model = NRAM(config.machine_config()).eval()
    writer = SummaryWriter(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with MemoryHeatmaps(writer, get_task("access"), config, "cpu") as heatmaps:
            heatmaps.log(model, step=1)  # queued behind the two figures drawn ahead
            raise KeyboardInterrupt
    heatmaps._executor.shutdown(wait=True)  # let the figure being drawn finish before the log closes
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == []


def test_the_cli_starts_without_importing_matplotlib():
    """matplotlib's import (about a second) runs on the drawing thread, beside the first steps."""
    script = "import sys, training.cli; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"
