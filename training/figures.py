"""The memory heatmap as an RGB image, drawn with matplotlib from numpy arrays.

Nothing here imports torch, and :class:`training.heatmaps.MemoryHeatmaps` imports this module
on a background thread, so matplotlib's import (about a second) runs beside training.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

FIGURE_DPI = 100


def memory_image(panels: list[tuple[str, np.ndarray]], scored: list[int], title: str) -> np.ndarray:
    """Labelled heatmaps side by side, ``P(cell i holds value j)``, as an RGB image ``[H, W, 3]`` (uint8).

    ``panels`` are (title, ``[M, M]`` probabilities) pairs, cells down and values across, drawn on
    one colour scale with its bar; the rows ``scored`` are framed in red in every panel but the first.
    """
    memory_size = panels[0][1].shape[0]
    size = min(4.5, 2.0 + 0.12 * memory_size)
    width, height = len(panels) * size + 1.8, size + 1.2
    # Fixed margins, not a layout engine: "constrained" draws the figure several times (0.5 s more).
    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI)
    figure.subplots_adjust(left=0.7 / width, right=1 - 1.3 / width, bottom=0.6 / height, top=1 - 0.75 / height,
                           wspace=0.08)
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (panel_title, panel) in zip(axes, panels):
        image = ax.imshow(panel, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        ax.set_title(panel_title)
        ax.set_xlabel("value j")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("cell i")
    for ax in axes[1:]:
        for cell in scored:
            ax.add_patch(Rectangle((-0.5, cell - 0.5), memory_size, 1, fill=False, edgecolor="red", linewidth=1.2))
    figure.colorbar(image, ax=axes, label="P(cell i holds j)", shrink=0.9, fraction=0.03, pad=0.02)
    figure.suptitle(title)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
