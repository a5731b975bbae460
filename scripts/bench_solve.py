"""Time to a solved task: `nram train` as a user runs it, from process start to the checkpoint.

For every task and seed, runs ``nram train --task T --seed S`` (the shipped config) in a fresh
process and records how long after the process started its final checkpoint was written (the
run stops at its first exact check, so this is the time to the first exact attempt), the
whole process's wall time, and whether the run is solved as a user would check it: 0 error at
every training length (soft, as the run's own check) and 0 discrete error at 4x the longest.

    python scripts/bench_solve.py                              # the easy five, seeds 0-2
    python scripts/bench_solve.py --tasks access,copy --seeds 0,1,2 --json solve.json

Records: {"task", "seed", "solved", "steps", "seconds", "wall_s"}; the table gives
each task's median seconds over its seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EASY_TASKS = ("access", "increment", "copy", "reverse", "swap")


def solve(task: str, seed: int, out: Path) -> dict:
    """One ``nram train`` run in a fresh process; its record."""
    started = time.time()
    completed = subprocess.run([sys.executable, "-m", "training.cli", "train", "--task", task, "--seed", str(seed),
                                "--out", str(out)], capture_output=True, text=True)
    wall = time.time() - started
    if completed.returncode != 0:
        raise RuntimeError(f"nram train --task {task} --seed {seed} failed:\n{completed.stderr[-2000:]}")
    summary = json.loads((out / "results.json").read_text())
    at_four = max(summary["discrete"], key=lambda record: record["length"])  # nram train checks 1x, 2x, 4x
    return {"task": task, "seed": seed, "solved": summary["solved"] and at_four["cell_error"] == 0,
            "steps": summary["steps"], "seconds": round((out / "checkpoint.pt").stat().st_mtime - started, 2),
            "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(EASY_TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        for task in args.tasks.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                records.append(solve(task, seed, Path(scratch) / f"{task}-{seed}"))
                r = records[-1]
                print(f"{task:>10} seed {seed}: {'solved' if r['solved'] else 'NOT solved'} at step {r['steps']}, "
                      f"{r['seconds']:.1f} s to the checkpoint, {r['wall_s']:.1f} s in all", flush=True)
    print(f"\n{'task':>10} {'solved':>7} {'median s':>9} {'median steps':>13}")
    for task in args.tasks.split(","):
        rows = [r for r in records if r["task"] == task]
        print(f"{task:>10} {sum(r['solved'] for r in rows):>3}/{len(rows):<3} "
              f"{statistics.median(r['seconds'] for r in rows):>9.1f} "
              f"{statistics.median(r['steps'] for r in rows):>13.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
