"""Error by input length, soft or discrete, with memory growing with the length.

The per-cell error is the paper's ``1 - c/m`` (m scored cells, c of them right); an example
counts as solved when all of its scored cells are right.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from nram.discrete import run_discrete
from nram.model import NRAM
from tasks.base import Task, TaskBatch


def cell_errors(final_memory: Tensor, batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """Per-example wrong scored cells and scored cells: integer memory ``[B, M]`` -> (``[B]``, ``[B]``)."""
    wrong = ((final_memory != batch.target) & batch.mask).sum(1)
    return wrong, batch.mask.sum(1)


@torch.no_grad()
def final_memory(model: NRAM, memory0: Tensor, steps: int, discrete: bool) -> Tensor:
    """The integer memory a run ends with ``[B, M]``: the discrete machine's, or the argmax of
    the soft machine's output distribution (``sum_t p_t memories[t]``)."""
    if discrete:
        return run_discrete(model, memory0, steps)
    return model.output_memory(memory0, steps).argmax(-1)


EVAL_CHUNK = 500
"""Evaluation samples and runs its examples in batches of at most this many."""


def evaluation_batches(task: Task, length: int, memory_size: int, examples: int, seed: int,
                       device: torch.device | str = "cpu") -> list[TaskBatch]:
    """The inputs :func:`evaluate` scores at one length: ``examples`` examples in batches of at most
    :data:`EVAL_CHUNK`, drawn from a generator seeded by ``seed`` and the length, so two models
    (or the members of a population) given the same seed see the same inputs."""
    generator = torch.Generator().manual_seed(seed * 100_003 + length)
    return [task.sample(min(EVAL_CHUNK, examples - start), length, memory_size, generator, device=device)
            for start in range(0, examples, EVAL_CHUNK)]


@torch.no_grad()
def evaluate(model: NRAM, task: Task, lengths: Iterable[int], *, memory_size_for: Callable[[int], int],
             timesteps_for: Callable[[int], int], examples: int = 1000, discrete: bool = False,
             seed: int = 1234, device: torch.device | str = "cpu") -> list[dict]:
    """Per-cell error and per-example accuracy at each length.

    Every length gets ``examples`` fresh examples (seeded by ``seed`` and the length, so two
    models see the same inputs) at memory size ``memory_size_for(n)``, run for
    ``timesteps_for(n)`` steps. Returns one record per length: ``{"length", "memory_size",
    "mode", "cell_error", "example_accuracy", "examples"}``.
    """
    was_training = model.training
    model.eval()
    records = error_by_length(lambda memory0, steps: final_memory(model, memory0, steps, discrete), task, lengths,
                              memory_size_for=memory_size_for, timesteps_for=timesteps_for, examples=examples,
                              seed=seed, device=device, mode="discrete" if discrete else "soft")
    model.train(was_training)
    return records


def error_by_length(run: Callable[[Tensor, int], Tensor], task: Task, lengths: Iterable[int], *,
                    memory_size_for: Callable[[int], int], timesteps_for: Callable[[int], int], examples: int,
                    seed: int, device: torch.device | str, mode: str, whole_lengths: bool = False) -> list[dict]:
    """:func:`evaluate`'s records for any machine: ``run(memory0 [B, M], steps)`` returns the final
    integer memory ``[B, M]``; ``mode`` names it in the records. ``whole_lengths`` runs all of a
    length's examples as one batch (the same inputs), for machines that keep O(B M) memory."""
    records = []
    for length in lengths:
        memory_size = memory_size_for(length)
        wrong_cells = scored_cells = solved = 0
        batches = evaluation_batches(task, length, memory_size, examples, seed, device)
        if whole_lengths:
            batches = [TaskBatch(*(torch.cat(parts) for parts in zip(*batches)))]
        for batch in batches:
            wrong, scored = cell_errors(run(batch.memory, timesteps_for(length)), batch)
            wrong_cells += int(wrong.sum())
            scored_cells += int(scored.sum())
            solved += int((wrong == 0).sum())
        records.append({"length": length, "memory_size": memory_size, "mode": mode,
                        "cell_error": wrong_cells / max(scored_cells, 1), "example_accuracy": solved / examples,
                        "examples": examples})
    return records
