"""The memory heatmaps of a run's TensorBoard log, drawn beside training on one background thread."""

from __future__ import annotations

import importlib
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from nram.model import NRAM
from tasks.base import Task
from training.config import TrainConfig


@torch.no_grad()
def memory_panels(model: NRAM, task: Task, length: int, memory_size: int, steps: int, seed: int,
                  device: torch.device | str) -> tuple[list[tuple[str, np.ndarray]], list[int]]:
    """One example, drawn from ``seed``, as three ``[M, M]`` arrays of ``P(cell i holds value j)``: the
    initial memory, the machine's output distribution after up to ``steps`` steps, and the target;
    with the example's scored cells."""
    batch = task.sample(1, length, memory_size, torch.Generator().manual_seed(seed), device=device)
    panels = [("initial memory", F.one_hot(batch.memory[0], memory_size)),
              (f"output after up to {steps} steps", model.output_memory(batch.memory, steps)[0]),
              ("target", F.one_hot(batch.target[0], memory_size))]
    scored = batch.mask[0].nonzero().flatten().tolist()
    return [(title, panel.float().cpu().numpy()) for title, panel in panels], scored


class MemoryHeatmaps:
    """Draws memory heatmaps into a TensorBoard log on one background thread.

    Importing matplotlib (about a second, begun as soon as this is made) and drawing (about 0.3 s
    a picture) would stall the training loop; the training step spends its time in native code
    that releases the GIL, so the thread mostly runs beside it. The machine's output is computed
    on the caller's thread, at the step it is logged for; only the drawing is deferred. A picture
    that fails is reported on stderr, never at the cost of the run. :meth:`close` waits for the
    pictures asked for, or drops those not yet begun.
    """

    def __init__(self, writer: SummaryWriter):
        self.writer = writer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nram-heatmaps")
        self._pending: list[Future] = [self._executor.submit(importlib.import_module, "training.figures")]

    def log(self, model: NRAM, task: Task, config: TrainConfig, step: int, device: torch.device | str) -> None:
        """One example at the longest training length and one at twice it, under ``memory/length_<n>``:
        labelled heatmaps of the initial memory, the output and the target, the scored cells framed."""
        self._pending = [future for future in self._pending if not future.done()]
        for length in (config.max_length, 2 * config.max_length):
            memory_size = config.memory_size_for(length)
            panels, scored = memory_panels(model, task, length, memory_size, config.timesteps_for(length),
                                           config.seed, device)
            title = f"{task.title}, length {length}, M = {memory_size} (red frames: the scored cells)"
            self._pending.append(self._executor.submit(self._draw, f"memory/length_{length}", panels, scored,
                                                       title, step))

    def _draw(self, tag: str, panels: list[tuple[str, np.ndarray]], scored: list[int], title: str,
              step: int) -> None:
        try:
            from training.figures import memory_image
            self.writer.add_image(tag, memory_image(panels, scored, title), step, dataformats="HWC")
            self.writer.flush()
        except Exception as error:  # a picture is not worth a run
            print(f"nram: the heatmap {tag} at step {step} was not drawn: {type(error).__name__}: {error}",
                  file=sys.stderr)

    def close(self, wait: bool = True) -> None:
        """Wait for every picture asked for (``wait``), or drop those not yet begun (a run stopped
        at once). Closing again does nothing."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
        self._pending.clear()

    def __enter__(self) -> MemoryHeatmaps:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        """Left by an exception (a second Ctrl-C, an error): the pictures not yet begun are dropped."""
        self.close(wait=error_type is None)
