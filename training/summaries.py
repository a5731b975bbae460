"""TensorBoard pictures and hyperparameters (scalars are logged where they are computed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from nram.model import NRAM
from tasks.base import Task
from training.config import TrainConfig

PIXELS_PER_CELL = 8


@torch.no_grad()
def memory_heatmap(model: NRAM, task: Task, length: int, memory_size: int, steps: int, seed: int,
                   device: torch.device) -> torch.Tensor:
    """One example as an image ``[H, W]`` in [0, 1]: initial memory | output distribution | target.

    Rows are cells, columns values; each panel is ``M x M`` (``P(cell i holds j)``), scaled up
    by :data:`PIXELS_PER_CELL` and separated by a grey column.
    """
    batch = task.sample(1, length, memory_size, torch.Generator().manual_seed(seed), device=device)
    panels = [F.one_hot(batch.memory[0], memory_size).float(),
              model.output_memory(batch.memory, steps)[0].float(),
              F.one_hot(batch.target[0], memory_size).float()]
    gap = torch.full((memory_size, 1), 0.5, device=device)
    image = torch.cat([panels[0], gap, panels[1], gap, panels[2]], dim=1)
    return image.repeat_interleave(PIXELS_PER_CELL, 0).repeat_interleave(PIXELS_PER_CELL, 1).cpu()


def log_memory_heatmaps(writer: SummaryWriter, model: NRAM, task: Task, config: TrainConfig, step: int,
                        device: torch.device) -> None:
    """Heatmaps at the longest training length and at twice it, under ``memory/length_<n>``."""
    for length in (config.max_length, 2 * config.max_length):
        image = memory_heatmap(model, task, length, config.memory_size_for(length), config.timesteps_for(length),
                               config.seed, device)
        writer.add_image(f"memory/length_{length}", image, step, dataformats="HW")


def log_hparams(writer: SummaryWriter, config: TrainConfig, final: list[dict]) -> None:
    """The config (lists and dicts as strings) with the final error at each evaluated length."""
    hparams = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
               for key, value in config.to_dict().items()}
    metrics = {f"hparam/cell_error_length_{r['length']}": r["cell_error"] for r in final}
    writer.add_hparams(hparams, metrics, run_name=".")
