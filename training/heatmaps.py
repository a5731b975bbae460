"""The memory heatmaps of a run's TensorBoard log, drawn beside training on one background thread."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from nram.model import NRAM
from tasks.base import Task
from training.config import TrainConfig


@dataclass(frozen=True)
class HeatmapExample:
    """The example a run's heatmaps show at one length: the same at every step, drawn from the run's seed."""

    tag: str
    """TensorBoard tag, ``memory/length_<n>``."""
    memory: Tensor
    """Initial memory ``[1, M]``."""
    steps: int
    """Timesteps the machine runs, T(n)."""
    initial: np.ndarray
    """``[M, M]``: the initial memory, one-hot."""
    target: np.ndarray
    """``[M, M]``: the target memory, one-hot."""
    scored: list[int]
    """The scored cells."""
    title: str
    """The figure's title."""

    @property
    def panel_titles(self) -> list[str]:
        """Titles of the three panels: initial memory, output, target."""
        return ["initial memory", f"output after up to {self.steps} steps", "target"]


def heatmap_example(task: Task, length: int, memory_size: int, steps: int, seed: int,
                    device: torch.device | str) -> HeatmapExample:
    """One example of ``task`` at ``length``, drawn from ``seed``, as the heatmaps show it."""
    batch = task.sample(1, length, memory_size, torch.Generator().manual_seed(seed), device=device)

    def one_hot(memory: Tensor) -> np.ndarray:
        return F.one_hot(memory[0], memory_size).float().cpu().numpy()

    return HeatmapExample(tag=f"memory/length_{length}", memory=batch.memory, steps=steps,
                          initial=one_hot(batch.memory), target=one_hot(batch.target),
                          scored=batch.mask[0].nonzero().flatten().tolist(),
                          title=f"{task.title}, length {length}, M = {memory_size} (red frames: the scored cells)")


@torch.no_grad()
def output_panel(model: NRAM, example: HeatmapExample) -> np.ndarray:
    """``[M, M]``: the machine's output distribution on the example, ``P(cell i holds value j)``."""
    return model.output_memory(example.memory, example.steps)[0].float().cpu().numpy()


class MemoryHeatmaps:
    """Draws a run's memory heatmaps into its TensorBoard log on one background thread.

    Two pictures, each an example at the longest training length and at twice it (one example
    per length for the whole run): its initial memory, the machine's output and the target.
    Importing matplotlib (about a second) and building the two figures begin as soon as this is
    made; each picture is then a redraw (about 0.15 s). The training step spends its time in
    native code that releases the GIL, so the thread mostly runs beside it. The machine's output
    is computed on the caller's thread, at the step it is logged for; only the drawing is
    deferred. A picture that fails is reported on stderr, never at the cost of the run.
    """

    def __init__(self, writer: SummaryWriter, task: Task, config: TrainConfig, device: torch.device | str):
        self.writer = writer
        self.examples = [heatmap_example(task, length, config.memory_size_for(length), config.timesteps_for(length),
                                         config.seed, device)
                         for length in (config.max_length, 2 * config.max_length)]
        self._figures: dict = {}
        """:class:`training.figures.MemoryFigure` by tag; used on the drawing thread only."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nram-heatmaps")
        for example in self.examples:
            self._executor.submit(self._draw, example, np.zeros_like(example.initial), step=None)

    def log(self, model: NRAM, step: int) -> None:
        """The pictures of ``model`` at ``step``, under each example's tag."""
        for example in self.examples:
            self._executor.submit(self._draw, example, output_panel(model, example), step)

    def _draw(self, example: HeatmapExample, output: np.ndarray, step: int | None) -> None:
        """Draw one picture and log it at ``step`` (None: only build and draw its figure, ahead of time)."""
        try:
            if example.tag not in self._figures:
                from training.figures import MemoryFigure
                self._figures[example.tag] = MemoryFigure(example.panel_titles, example.initial.shape[0],
                                                          example.scored, example.title)
            image = self._figures[example.tag].image([example.initial, output, example.target])
            if step is not None:
                self.writer.add_image(example.tag, image, step, dataformats="HWC")
                self.writer.flush()
        except Exception as error:  # a picture is not worth a run
            when = f"at step {step}" if step is not None else "ahead of the run"
            print(f"nram: the heatmap {example.tag} {when} was not drawn: {type(error).__name__}: {error}",
                  file=sys.stderr)

    def close(self, wait: bool = True) -> None:
        """Wait for every picture asked for (``wait``), or drop those not yet begun (a run stopped
        at once). Closing again does nothing."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> MemoryHeatmaps:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        """Left by an exception (a second Ctrl-C, an error): the pictures not yet begun are dropped."""
        self.close(wait=error_type is None)
