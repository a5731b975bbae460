"""Stopping a run between steps: SIGINT (Ctrl-C) and SIGTERM (schedulers, ``timeout``, containers).

The first signal only sets a flag, which the training loop reads between steps, so the
checkpoint it then writes holds whole steps and a resume is exact. A second signal stops at
once (KeyboardInterrupt), as a user pressing Ctrl-C twice expects.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run stopped on a signal after saving its checkpoint; ``exit_code`` is the shell's 128 + signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class StopRequest:
    """A context manager that catches SIGINT and SIGTERM while it is open; ``signum`` is the
    first one received (None before). Outside the main thread it catches nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def requested(self) -> bool:
        """Whether a signal has arrived."""
        return self.signum is not None
