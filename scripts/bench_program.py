"""How long verifying a program takes: the hand programs on the integer machine at long inputs.

Each hand program (training/programs.py) runs on its task's shipped circuit, M(n) and T(n), as
`nram program --verify` runs a learned one: ``examples`` inputs of length ``length`` drawn as
`nram eval` draws them, then the program's choice table stepped over the batch. The machine
reads and writes one cell per gate and step, so a run is O(B T) however large M is. One
thread unless told; medians of ``--rounds`` timings.

    python scripts/bench_program.py                       # length 1000, 1000 examples, one thread
    python scripts/bench_program.py --length 100 --json out.json

Records: {"task", "length", "M", "T", "examples", "threads", "sample_s", "run_s", "cell_error"}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from nram.circuit import CircuitLayout
from nram.gates import GATE_NAMES
from tasks import get_task
from tasks.base import TaskBatch
from training.config import default_config_path, load_config
from training.evaluate import cell_errors, evaluation_batches
from training.program_machine import run_table
from training.programs import PROGRAMS


def bench(task_name: str, length: int, examples: int, rounds: int) -> dict:
    """Time sampling and running one hand program; the run's per-cell error rides along."""
    config = load_config(default_config_path(task_name))
    layout = CircuitLayout(config.num_registers, tuple(config.gates) or GATE_NAMES)
    program = PROGRAMS[task_name]
    table, stops = program.choice_table(layout), program.stop_table()
    memory_size, steps = config.memory_size_for(length), config.timesteps_for(length)
    sample_times, run_times = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        batches = evaluation_batches(get_task(task_name), length, memory_size, examples, seed=0)
        batch = TaskBatch(*(torch.cat(parts) for parts in zip(*batches)))  # one batch, as nram program runs it
        sampled = time.perf_counter()
        final = run_table(table, stops, layout, batch.memory, steps)
        run_times.append(time.perf_counter() - sampled)
        sample_times.append(sampled - started)
    wrong, scored = cell_errors(final, batch)
    return {"task": task_name, "length": length, "M": memory_size, "T": steps, "examples": examples,
            "threads": torch.get_num_threads(), "sample_s": statistics.median(sample_times),
            "run_s": statistics.median(run_times), "cell_error": int(wrong.sum()) / int(scored.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = [bench(name, args.length, args.examples, args.rounds) for name in sorted(PROGRAMS)]
    print(f"{'task':>12} {'length':>6} {'M':>6} {'T':>6} {'examples':>8} {'sample s':>9} {'run s':>7} "
          f"{'cell error':>10}")
    for r in records:
        print(f"{r['task']:>12} {r['length']:>6} {r['M']:>6} {r['T']:>6} {r['examples']:>8} {r['sample_s']:>9.2f} "
              f"{r['run_s']:>7.2f} {r['cell_error']:>10.4f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main()
