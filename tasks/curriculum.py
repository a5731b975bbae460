"""Curricula: objects that turn a difficulty level into per-example lengths.

A curriculum draws one length per example (``sample_lengths``), hears the error measured at
its current level (``update``) and saves its state in plain Python types (``state_dict``),
so a checkpoint read with ``torch.load(..., weights_only=True)`` can hold it. Lengths drawn
for one batch differ; :meth:`tasks.base.Task.sample_mixed` samples such a batch at one
memory size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor


class Curriculum(ABC):
    """Lengths between ``min_length`` and ``max_length`` (both included), drawn per example.

    Every curriculum has a ``level``: the length it is currently working towards.
    """

    level: int

    def __init__(self, min_length: int, max_length: int):
        if not 1 <= min_length <= max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {min_length} and {max_length}")
        self.min_length = min_length
        self.max_length = max_length

    @abstractmethod
    def sample_lengths(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """One length per example: ``LongTensor[batch_size]`` with entries in ``min_length..max_length``."""

    @abstractmethod
    def update(self, error: float) -> bool:
        """Report the error measured at the current level; returns whether the level went up."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The curriculum's state in plain Python types."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`."""

    def _uniform(self, low: Tensor | int, high: Tensor | int, batch_size: int,
                 generator: torch.Generator | None) -> Tensor:
        """Integers uniform on ``low..high`` (both included, per example if tensors): ``LongTensor[B]``."""
        count = torch.as_tensor(high) - low + 1
        draw = (torch.rand(batch_size, generator=generator, dtype=torch.float64) * count).long()
        return low + torch.minimum(draw, count - 1)


class ZarembaCurriculum(Curriculum):
    """Zaremba & Sutskever's (2015) curriculum, as NRAM trains with it.

    With level D, every example independently draws ``e ~ Geometric(1/2)`` on {0, 1, 2, ...}
    (``P(e) = 2^-(e+1)``), lets ``top = min(D + e, max_length)``, and takes its length

    - with probability 0.10 uniform on ``min_length..max_length``,
    - with probability 0.25 uniform on ``min_length..top``,
    - with probability 0.65 equal to ``top``.

    ``update(error)`` raises D by one (up to ``max_length``) when the error measured at
    length D is below ``threshold``.
    """

    UNIFORM_ALL = 0.10
    """Probability of a length uniform over all levels."""
    UNIFORM_UP_TO = 0.25
    """Probability of a length uniform on ``min_length..D+e``."""

    def __init__(self, min_length: int, max_length: int, threshold: float = 0.01,
                 level: int | None = None):
        super().__init__(min_length, max_length)
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.threshold = threshold
        self._set_level(min_length if level is None else level)

    def _set_level(self, level: int) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not self.min_length <= level <= self.max_length:
            raise ValueError(f"level must be an integer in {self.min_length}..{self.max_length}, got {level!r}")
        self.level = level

    def sample_lengths(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``batch_size`` lengths from the mixture above: ``LongTensor[batch_size]``."""
        branch = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        extra = torch.empty(batch_size, dtype=torch.float64).geometric_(0.5, generator=generator).long() - 1
        top = (self.level + extra).clamp_max(self.max_length)
        everywhere = self._uniform(self.min_length, self.max_length, batch_size, generator)
        up_to_top = self._uniform(self.min_length, top, batch_size, generator)
        return torch.where(branch < self.UNIFORM_ALL, everywhere,
                           torch.where(branch < self.UNIFORM_ALL + self.UNIFORM_UP_TO, up_to_top, top))

    def update(self, error: float) -> bool:
        """Promote (level += 1) if ``error``, measured at the current level, is below the threshold.

        The level never exceeds ``max_length``. Returns whether it went up.
        """
        if error < self.threshold and self.level < self.max_length:
            self.level += 1
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """``{"level": int}``."""
        return {"level": self.level}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the level (it must lie in ``min_length..max_length``)."""
        self._set_level(state["level"])

    def __repr__(self) -> str:
        return (f"ZarembaCurriculum(min_length={self.min_length}, max_length={self.max_length}, "
                f"threshold={self.threshold}, level={self.level})")


class FixedCurriculum(Curriculum):
    """No curriculum (for ablations): lengths uniform on ``min_length..max_length``, never changing.

    ``FixedCurriculum(n, n)`` trains on length n only. Its ``level`` is ``max_length``.
    """

    def __init__(self, min_length: int, max_length: int):
        super().__init__(min_length, max_length)
        self.level = max_length

    def sample_lengths(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """``LongTensor[batch_size]``, uniform on ``min_length..max_length``."""
        return self._uniform(self.min_length, self.max_length, batch_size, generator)

    def update(self, error: float) -> bool:
        """Nothing changes; returns False."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """``{}``: a fixed curriculum has no state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

    def __repr__(self) -> str:
        return f"FixedCurriculum(min_length={self.min_length}, max_length={self.max_length})"
