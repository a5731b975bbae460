"""Programs on the integer machine: run one over a batch, score it as ``nram eval`` does, and
find which patterns of zero flags the task's inputs reach.

A program here is its choice table (:meth:`training.programs.Program.choice_table`) and stop
table: each step looks up the row of the current flags, so memory access is O(1) per gate and
a run costs O(B T) whatever M is (the memory is written in place).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from nram.circuit import CircuitLayout
from nram.discrete import discrete_step, split_choices
from nram.model import NRAM
from tasks import get_task
from tasks.base import Task
from training.config import TrainConfig
from training.evaluate import error_by_length, evaluation_batches
from training.programs import Program, pattern_index


def run_table(table: Tensor, stops: Tensor, layout: CircuitLayout, memory0: Tensor, steps: int,
              first_seen: Tensor | None = None) -> Tensor:
    """Run a choice table ``LongTensor[2^R, num_slots]`` with its stop table ``BoolTensor[2^R]``
    on ``memory0`` ``LongTensor[B, M]`` for at most ``steps`` steps; returns the final memory ``[B, M]``.

    An example stops after a step whose flags' stop entry is true, as the discrete machine
    stops on a positive stop logit. ``first_seen`` ``LongTensor[2^R]`` (-1 = never), if given,
    is updated in place with the first step (0-based) at which a running example showed each pattern.
    """
    memory = memory0.clone()
    batch_size = memory.shape[0]
    registers = memory.new_zeros(batch_size, layout.num_registers)
    can_stop = bool(stops.any())
    running = torch.ones(batch_size, dtype=torch.bool, device=memory.device)
    gate_inputs_of, register_sources_of = split_choices(table.to(memory.device), layout)  # per pattern
    stops = stops.to(memory.device)
    for step in range(steps):
        patterns = pattern_index(registers == 0)
        if first_seen is not None:
            new = patterns[running].unique().cpu()
            new = new[first_seen[new] < 0]
            first_seen[new] = step
        memory, registers, _ = discrete_step(memory, registers, gate_inputs_of[patterns], register_sources_of[patterns],
                                             layout.gates, running=running if can_stop else None, in_place=True)
        if can_stop:
            running = running & ~stops[patterns]
            if not running.any():
                break
    return memory


def reached_patterns(program: Program, layout: CircuitLayout, task: Task, lengths: Iterable[int], *,
                     memory_size_for: Callable[[int], int], timesteps_for: Callable[[int], int],
                     examples: int = 200, seed: int = 1234) -> Tensor:
    """The first step at which ``program`` shows each pattern of flags on the task's inputs at
    ``lengths`` (each at M(n), T(n)): ``LongTensor[2^R]``, -1 for patterns never reached."""
    table, stops = program.choice_table(layout), program.stop_table()
    first_seen = torch.full((len(table),), -1, dtype=torch.long)
    for length in lengths:
        for batch in evaluation_batches(task, length, memory_size_for(length), examples, seed):
            run_table(table, stops, layout, batch.memory, timesteps_for(length), first_seen)
    return first_seen


def evaluate_program(program: Program, layout: CircuitLayout, task: Task, lengths: Iterable[int], *,
                     memory_size_for: Callable[[int], int], timesteps_for: Callable[[int], int],
                     examples: int = 1000, seed: int = 1234, device: torch.device | str = "cpu") -> list[dict]:
    """:func:`training.evaluate.evaluate`'s records (mode ``"program"``) for ``program`` on the same
    inputs: a program read off a controller scores as the controller does with ``discrete``."""
    table, stops = program.choice_table(layout), program.stop_table()
    return error_by_length(lambda memory0, steps: run_table(table, stops, layout, memory0, steps), task, lengths,
                           memory_size_for=memory_size_for, timesteps_for=timesteps_for, examples=examples,
                           seed=seed, device=device, mode="program", whole_lengths=True)


def decompile(model: NRAM, config: TrainConfig, examples: int = 200, seed: int = 1234) -> tuple[Program, Tensor]:
    """The program ``model``'s feed-forward controller computes (:meth:`Program.from_controller`),
    with the patterns that inputs of ``config``'s task reach at its training lengths and at 4x
    the longest (each at M(n), T(n)) told apart from those never reached. Returns the program
    and the first step each pattern was reached, ``LongTensor[2^R]`` (-1: never)."""
    lengths = config.train_lengths() + [4 * config.max_length]
    first_seen = reached_patterns(Program.from_controller(model), model.layout, get_task(config.task), lengths,
                                  memory_size_for=config.memory_size_for, timesteps_for=config.timesteps_for,
                                  examples=examples, seed=seed)
    return Program.from_controller(model, first_seen), first_seen
