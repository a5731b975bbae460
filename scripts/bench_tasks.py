"""Task sampling throughput: examples/s per task at one batch size and memory size.

For each task, the length is the largest that fits the memory size. Prints a table; with
``--json FILE`` also writes a list of records
``{"task", "length", "memory_size", "batch", "examples_per_s"}``.

    python scripts/bench_tasks.py [--batch 256] [--memory-size 32] [--seconds 2] [--rounds 5]
                                  [--warmup 20000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from tasks import TASK_NAMES, get_task


def examples_per_second(name: str, batch: int, memory_size: int, seconds: float, rounds: int,
                        warmup: int) -> tuple[int, float]:
    """Sample batches of task ``name`` for ``rounds`` rounds of ``seconds / rounds`` each.

    First ``warmup`` examples are sampled untimed (WalkBST caches tree shapes, so this
    measures the steady state a training run sees). Returns (length, median examples/s over
    the rounds); the median keeps the number steady when other processes share the CPU.
    """
    task = get_task(name)
    length = task.max_length(memory_size)
    generator = torch.Generator().manual_seed(0)
    for _ in range(max(1, warmup // batch)):
        task.sample(batch, length, memory_size, generator)
    rates = []
    for _ in range(rounds):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / rounds:
            task.sample(batch, length, memory_size, generator)
            calls += 1
        rates.append(calls * batch / elapsed)
    return length, statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="examples per sample() call")
    parser.add_argument("--memory-size", type=int, default=32, help="memory size M")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per task, all rounds together")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per task (the median is reported)")
    parser.add_argument("--warmup", type=int, default=20_000, help="examples sampled untimed first")
    parser.add_argument("--tasks", default=",".join(TASK_NAMES), help="comma-separated task names")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON records")
    args = parser.parse_args()

    records = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, M = {args.memory_size}")
    print(f"{'task':<12} {'length':>6} {'M':>4} {'batch':>6} {'examples/s':>12}")
    for name in args.tasks.split(","):
        length, rate = examples_per_second(name, args.batch, args.memory_size, args.seconds, args.rounds,
                                           args.warmup)
        print(f"{name:<12} {length:>6} {args.memory_size:>4} {args.batch:>6} {rate:>12,.0f}")
        records.append({"task": name, "length": length, "memory_size": args.memory_size,
                        "batch": args.batch, "examples_per_s": rate})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)


if __name__ == "__main__":
    main()
