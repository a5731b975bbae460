"""TensorBoard pictures and hyperparameters (scalars are logged where they are computed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch.utils.tensorboard import SummaryWriter

from nram.model import NRAM
from tasks.base import Task
from training.config import TrainConfig

FIGURE_DPI = 100


@torch.no_grad()
def memory_figure(model: NRAM, task: Task, length: int, memory_size: int, steps: int, seed: int,
                  device: torch.device) -> Figure:
    """One example as a figure of three labelled heatmaps, ``P(cell i holds value j)``: the initial
    memory, the machine's output distribution and the target, cells down and values across, on one
    colour scale with its bar; the scored cells are framed in red in the output and the target."""
    batch = task.sample(1, length, memory_size, torch.Generator().manual_seed(seed), device=device)
    panels = [("initial memory", F.one_hot(batch.memory[0], memory_size).float()),
              (f"output after up to {steps} steps", model.output_memory(batch.memory, steps)[0].float()),
              ("target", F.one_hot(batch.target[0], memory_size).float())]
    size = min(4.5, 2.0 + 0.12 * memory_size)
    width, height = 3 * size + 1.8, size + 1.2
    # Fixed margins, not a layout engine: "constrained" draws the figure several times (0.5 s more).
    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI)
    figure.subplots_adjust(left=0.7 / width, right=1 - 1.3 / width, bottom=0.6 / height, top=1 - 0.75 / height,
                           wspace=0.08)
    axes = figure.subplots(1, 3, sharey=True)
    scored = batch.mask[0].nonzero().flatten().tolist()
    for ax, (title, panel) in zip(axes, panels):
        image = ax.imshow(panel.cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest",
                          aspect="equal")
        ax.set_title(title)
        ax.set_xlabel("value j")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("cell i")
    for ax in axes[1:]:
        for cell in scored:
            ax.add_patch(Rectangle((-0.5, cell - 0.5), memory_size, 1, fill=False, edgecolor="red", linewidth=1.2))
    figure.colorbar(image, ax=axes, label="P(cell i holds j)", shrink=0.9, fraction=0.03, pad=0.02)
    figure.suptitle(f"{task.title}, length {length}, M = {memory_size} (red frames: the scored cells)")
    return figure


def log_memory_heatmaps(writer: SummaryWriter, model: NRAM, task: Task, config: TrainConfig, step: int,
                        device: torch.device) -> None:
    """:func:`memory_figure` at the longest training length and at twice it, under ``memory/length_<n>``."""
    for length in (config.max_length, 2 * config.max_length):
        figure = memory_figure(model, task, length, config.memory_size_for(length), config.timesteps_for(length),
                               config.seed, device)
        writer.add_figure(f"memory/length_{length}", figure, step)


def log_hparams(writer: SummaryWriter, config: TrainConfig, final: list[dict]) -> None:
    """The config (lists and dicts as strings) with the final error at each evaluated length."""
    hparams = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
               for key, value in config.to_dict().items()}
    metrics = {f"hparam/cell_error_length_{r['length']}": r["cell_error"] for r in final}
    writer.add_hparams(hparams, metrics, run_name=".")
