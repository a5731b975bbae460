"""TensorBoard pictures and hyperparameters (scalars are logged where they are computed)."""

from __future__ import annotations

import importlib
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
                  device: torch.device) -> tuple[list[tuple[str, np.ndarray]], list[int]]:
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
    """The memory heatmaps of a run's TensorBoard log, drawn on one background thread.

    Importing matplotlib (about a second, started as soon as this is made) and drawing would stall
    the training loop. The CPU training step runs on one core and releases the GIL in its native
    calls, so the thread mostly runs beside it. The machine's output is computed on the caller's
    thread, at the step it is logged for; only the drawing waits. Call :meth:`close` before closing
    the writer: it waits for every picture and raises a drawing's error.
    """

    def __init__(self, writer: SummaryWriter):
        self.writer = writer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nram-heatmaps")
        self._pending: list[Future] = [self._thread.submit(importlib.import_module, "training.figures")]

    def log(self, model: NRAM, task: Task, config: TrainConfig, step: int, device: torch.device) -> None:
        """One example at the longest training length and one at twice it, under ``memory/length_<n>``:
        labelled heatmaps of the initial memory, the output and the target, the scored cells framed."""
        self._raise_failures()
        for length in (config.max_length, 2 * config.max_length):
            memory_size = config.memory_size_for(length)
            panels, scored = memory_panels(model, task, length, memory_size, config.timesteps_for(length),
                                           config.seed, device)
            title = f"{task.title}, length {length}, M = {memory_size} (red frames: the scored cells)"
            self._pending.append(self._thread.submit(self._draw, f"memory/length_{length}", panels, scored, title,
                                                     step))

    def _draw(self, tag: str, panels: list[tuple[str, np.ndarray]], scored: list[int], title: str,
              step: int) -> None:
        from training.figures import memory_image
        self.writer.add_image(tag, memory_image(panels, scored, title), step, dataformats="HWC")
        self.writer.flush()

    def _raise_failures(self) -> None:
        """Raise the error of a finished drawing, if one failed; forget the finished ones."""
        for future in [future for future in self._pending if future.done()]:
            self._pending.remove(future)
            future.result()

    def close(self) -> None:
        """Wait for every picture asked for; raise the first drawing's error, if any."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending.clear()
            self._thread.shutdown()


def log_hparams(writer: SummaryWriter, config: TrainConfig, final: list[dict]) -> None:
    """The config (lists and dicts as strings) with the final error at each evaluated length."""
    hparams = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
               for key, value in config.to_dict().items()}
    metrics = {f"hparam/cell_error_length_{r['length']}": r["cell_error"] for r in final}
    writer.add_hparams(hparams, metrics, run_name=".")
