"""Checkpoints: the whole run in plain types, readable with ``torch.load(weights_only=True)``.

A checkpoint is a dict: ``format`` and ``version`` (to recognise one), ``config`` (the
TrainConfig as a dict), ``step``, ``model`` and ``optimizer`` state dicts, ``curriculum``
state, ``rng`` (generator states as byte tensors) and ``trainer`` (small counters). Writes
go to a temporary file that is renamed into place, so an interrupted save never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nram.model import NRAM
from training.config import TrainConfig

FORMAT = "nram-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("config", "step", "model", "optimizer", "curriculum", "rng", "trainer")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not belong to the run that loads it."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format and version) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two writers never share one
    try:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # a full disk surfaces from torch's writer as a RuntimeError
        temporary.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write the checkpoint {path}: {first_sentence(str(error))}; the previous "
                              f"checkpoint there, if any, is intact") from None


def first_sentence(text: str) -> str:
    """The first sentence of an error message (torch's go on with advice that does not apply here)."""
    return (text.splitlines() or [""])[0].split(". ")[0]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    """Read and sanity-check a checkpoint holding the ``required`` entries; raise
    :class:`CheckpointError` with the reason if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # arbitrary bytes fail the unpickler in arbitrary ways (KeyError, IndexError, ...)
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                              f"{type(error).__name__}: {first_sentence(str(error))}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nram checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}; this nram reads {VERSION}")
    missing = [key for key in required if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return payload


def model_from_checkpoint(payload: dict[str, Any], device: str | torch.device = "cpu") -> tuple[NRAM, TrainConfig]:
    """Rebuild ``(model, config)`` from a loaded checkpoint: an :class:`nram.model.NRAM` in eval mode."""
    config = TrainConfig.from_dict(payload["config"], source="checkpoint config")
    model = NRAM(config.machine_config()).to(device)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint weights do not fit its own config: {str(error).splitlines()[0]}") from None
    return model.eval(), config


LOCK_NAME = ".lock"
"""The file in a run directory that :func:`locked_run_directory` locks; it holds the owner's pid."""


@contextlib.contextmanager
def locked_run_directory(path: str | Path) -> Iterator[Path]:
    """Create ``path`` if needed and hold an exclusive lock on it while the block runs, so two
    runs never write one directory; a second gets a ``ValueError`` naming the first's pid.
    The lock is the operating system's (``flock``): it goes when the process does, however it ends."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / LOCK_NAME, "a+")
    except OSError as error:
        raise ValueError(f"cannot write to {path}: {error.strerror}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ValueError(f"{path} is in use by another nram run (pid {holder}); wait for it or choose "
                             f"another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
