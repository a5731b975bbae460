"""The memory heatmaps as an RGB image, drawn with matplotlib from numpy arrays.

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


class MemoryFigure:
    """Labelled heatmaps side by side, ``P(cell i holds value j)``, built once and redrawn with new data.

    Every panel is ``[M, M]``, cells down and values across, on one colour scale with its bar; the
    rows ``scored`` are framed in red in every panel but the first. Building a figure and drawing
    it the first time (its ticks and text) costs about twice a redraw, so a run keeps one per
    picture it logs.
    """

    def __init__(self, titles: list[str], memory_size: int, scored: list[int], title: str):
        size = min(4.5, 2.0 + 0.12 * memory_size)
        width, height = len(titles) * size + 1.8, size + 1.2
        # Fixed margins, not a layout engine: "constrained" draws the figure several times (0.5 s more).
        self.figure = Figure(figsize=(width, height), dpi=FIGURE_DPI)
        self.figure.subplots_adjust(left=0.7 / width, right=1 - 1.3 / width, bottom=0.6 / height,
                                    top=1 - 0.75 / height, wspace=0.08)
        axes = self.figure.subplots(1, len(titles), sharey=True, squeeze=False)[0]
        empty = np.zeros((memory_size, memory_size), dtype=np.float32)
        self.images = [ax.imshow(empty, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
                       for ax in axes]
        for ax, panel_title in zip(axes, titles):
            ax.set_title(panel_title)
            ax.set_xlabel("value j")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].set_ylabel("cell i")
        for ax in axes[1:]:
            for cell in scored:
                ax.add_patch(Rectangle((-0.5, cell - 0.5), memory_size, 1, fill=False, edgecolor="red",
                                       linewidth=1.2))
        self.figure.colorbar(self.images[-1], ax=axes, label="P(cell i holds j)", shrink=0.9, fraction=0.03,
                             pad=0.02)
        self.figure.suptitle(title)
        self.canvas = FigureCanvasAgg(self.figure)

    def image(self, panels: list[np.ndarray]) -> np.ndarray:
        """The figure with these ``[M, M]`` panels, as an RGB image ``[H, W, 3]`` (uint8)."""
        for image, panel in zip(self.images, panels, strict=True):
            image.set_data(panel)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()
