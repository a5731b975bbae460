"""The ten NRAM tasks by name: :data:`TASK_NAMES` and :func:`get_task`."""

from __future__ import annotations

from tasks.arrays import Access, Copy, Increment, Merge, Permutation, Reverse, Swap
from tasks.base import Task
from tasks.lists import ListK, ListSearch
from tasks.trees import WalkBST

TASK_CLASSES: dict[str, type[Task]] = {cls.name: cls for cls in (
    Access, Increment, Copy, Reverse, Swap, Permutation, ListK, ListSearch, Merge, WalkBST)}
"""Task class of every task name, in the paper's order."""

TASK_NAMES: tuple[str, ...] = tuple(TASK_CLASSES)
"""Lower-case names of all tasks, in the paper's order."""


def get_task(name: str) -> Task:
    """The task called ``name`` (one of :data:`TASK_NAMES`; case is ignored), e.g. ``get_task("copy")``."""
    key = name.lower() if isinstance(name, str) else name
    if key not in TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}; valid tasks are {', '.join(TASK_NAMES)}")
    return TASK_CLASSES[key]()
