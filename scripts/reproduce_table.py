"""Train every task over several seeds with the shipped configs and write a Table-1-like report.

    python scripts/reproduce_table.py                       # all tasks, seeds 0 1 2 -> docs/results.md
    python scripts/reproduce_table.py --tasks access copy --seeds 0 1 --device cuda

For each task: training lengths, train error (soft, at the training lengths), soft and
discrete error at 2x and 4x the longest training length, seeds that learned their training
lengths (at most 5% error at each), seeds solved (train error 0 and at most 1% error at 2x
and 4x, soft and discrete), each seed's restarts and wall time. Errors are
per cell; the median over seeds is shown with the range. The records behind the table go to
``docs/results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tasks import TASK_NAMES
from training.config import default_config_path, load_config
from training.population import PopulationTrainer
from training.trainer import Trainer

SOLVED_ERROR = 0.01
LEARNED_ERROR = 0.05
"""A seed has learned its training lengths when each is at most this wrong per cell (issue 17's target)."""


def train_and_evaluate(task: str, seed: int, device: str, out_root: Path, examples: int,
                       existing: bool = False) -> dict:
    """Train one seed from scratch (or, ``existing``, take the run ``nram train`` left in
    ``out_root/<task>-seed<seed>``, with the wall time its results.json records) and measure it
    at 1x (all training lengths), 2x and 4x."""
    config = load_config(default_config_path(task), seed=seed, device=device)
    out = out_root / f"{task}-seed{seed}"
    trainer_class = PopulationTrainer if config.population > 1 else Trainer
    if existing:
        trainer = trainer_class(config, out, resume=True, progress=False)
        summary_path = out / "results.json"  # absent where the run was stopped by a signal
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        seconds = summary.get("wall_seconds")
        dated = summary.get("rescaled_gates", False)
    else:
        if (out / "checkpoint.pt").exists():
            raise SystemExit(f"{out} already holds a run: remove it or choose another --out")
        start = time.perf_counter()
        trainer = trainer_class(config, out, progress=False)
        trainer.train()
        seconds = time.perf_counter() - start
        dated = True
    train_lengths, report_lengths = config.train_lengths(), config.report_lengths()
    soft = trainer.evaluate(train_lengths + report_lengths[1:], examples=examples)
    discrete = trainer.evaluate(report_lengths, discrete=True, examples=examples)
    train_error = sum(r["cell_error"] for r in soft[:len(train_lengths)]) / len(train_lengths)
    return {"task": task, "seed": seed, "train_lengths": [config.min_length, config.max_length], "steps": config.steps,
            "steps_trained": trainer.step, "population": config.population,
            "member_steps": trainer.step * config.population, "restarts": int(trainer.counters["restarts"]),
            "seconds": None if seconds is None else round(seconds, 1), "train_error": train_error, "soft": soft,
            "discrete": discrete, **({"rescaled_gates": True} if dated else {})}


def solved(record: dict) -> bool:
    """Train error 0 and at most 1% per-cell error at 2x and 4x, soft and discrete."""
    longer = record["soft"][-2:] + record["discrete"][-2:]
    return record["train_error"] == 0 and all(r["cell_error"] <= SOLVED_ERROR for r in longer)


def learned(record: dict) -> bool:
    """At most :data:`LEARNED_ERROR` per-cell error at every training length, in the soft machine."""
    low, high = record["train_lengths"]
    return all(r["cell_error"] <= LEARNED_ERROR for r in record["soft"][:high - low + 1])


def merge_with_earlier(path: Path, records: list[dict]) -> list[dict]:
    """Records of an earlier report at ``path`` for other (task, seed) pairs, then the new ones,
    so tasks can be run in separate invocations and still land in one table."""
    if not path.exists():
        return records
    new = {(r["task"], r["seed"]) for r in records}
    earlier = [r for r in json.loads(path.read_text()) if (r["task"], r["seed"]) not in new]
    order = {name: i for i, name in enumerate(TASK_NAMES)}
    return sorted(earlier + records, key=lambda r: (order[r["task"]], r["seed"]))


def summary(values: list[float]) -> str:
    """Median over seeds with the range, as percentages."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.median(values):.1f} ({100 * min(values):.1f}-{100 * max(values):.1f})"


def wall_time(seconds: list[float | None]) -> str:
    """Median wall time of the runs that recorded one ("?" for a run stopped before its end)."""
    known = [value for value in seconds if value is not None]
    text = f"{statistics.median(known):.0f} s" if known else "?"
    return text + (f" ({len(seconds) - len(known)} stopped early)" if len(known) < len(seconds) else "")


def markdown(records: list[dict], device: str) -> str:
    lines = ["# Results: error by length (per cell, %)", "",
             f"Produced by `scripts/reproduce_table.py` on {device}; median over seeds (range). "
             "Train error is the mean over the training lengths; 1x discrete is the longest training "
             "length. A seed is solved when its train error is 0 and its error at 2x and 4x the longest "
             "training length is at most 1%, soft and discrete; it has learned its training lengths "
             "when each is at most 5% wrong in the soft machine (its discrete errors are beside it). "
             "Every length n is trained, checked and evaluated at the same machine: "
             "memory M(n) (the task's minimum plus the config's memory_extra empty cells, filled with "
             "trash) and T(n) timesteps. Restarts: how often each seed's run (or, in a population, "
             "its members) started again from fresh weights, included in its wall time. Member-steps: "
             "steps trained times population size (the best member is the seed's result). What was "
             "tried on the tasks no seed solves, and where their training stops: `docs/harder.md`.", "",
             "| task | train lengths | train error | 2x soft | 4x soft | 1x discrete | 2x discrete "
             "| 4x discrete | training lengths learned | seeds solved | restarts by seed | member-steps by seed "
             "| wall time per seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in records):
        runs = [r for r in records if r["task"] == task]
        low, high = runs[0]["train_lengths"]
        earlier = "*" if any("population" not in r for r in runs) else ""
        earlier += "†" if any("rescaled_gates" not in r for r in runs) else ""
        lines.append(
            f"| {task}{earlier} | {low}-{high} | {summary([r['train_error'] for r in runs])} "
            f"| {summary([r['soft'][-2]['cell_error'] for r in runs])} "
            f"| {summary([r['soft'][-1]['cell_error'] for r in runs])} "
            f"| {summary([r['discrete'][-3]['cell_error'] for r in runs])} "
            f"| {summary([r['discrete'][-2]['cell_error'] for r in runs])} "
            f"| {summary([r['discrete'][-1]['cell_error'] for r in runs])} "
            f"| {sum(learned(r) for r in runs)}/{len(runs)} "
            f"| {sum(solved(r) for r in runs)}/{len(runs)} "
            f"| {', '.join(str(r.get('restarts', '?')) for r in runs)} "
            f"| {', '.join(str(r.get('member_steps', r.get('steps_trained', '?'))) for r in runs)} "
            f"| {wall_time([r['seconds'] for r in runs])} |")
    if any("population" not in r for r in records):
        lines += ["", "\\* Trained before every length ran at its own M(n) and T(n) (a batch then ran at its "
                  "longest example's), with the same config; not yet re-run."]
    if any("rescaled_gates" not in r for r in records):
        lines += ["", "† Trained before the gates of `nram.gates.RESCALED_GATES` divided their output by its total "
                  "(session 17), or scored with --existing from a run the table cannot date: the same machine in exact "
                  "arithmetic, and the checkpoints checked score the same (`docs/harder.md`), but the same seeds "
                  "would now train along other paths; not yet re-run."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--examples", type=int, default=1000, help="evaluation examples per length")
    parser.add_argument("--out", default="runs/reproduce", help="where the runs go")
    parser.add_argument("--report", default="docs/results.md")
    parser.add_argument("--render-only", action="store_true", help="rewrite the table from the report's JSON")
    parser.add_argument("--existing", action="store_true",
                        help="score the runs `nram train --task T --seed S --out OUT/T-seedS` left, training nothing")
    args = parser.parse_args()
    report = Path(args.report)
    if args.render_only:
        report.write_text(markdown(json.loads(report.with_suffix(".json").read_text()), args.device))
        print(report.read_text())
        return
    records = []
    for task in args.tasks:
        for seed in args.seeds:
            record = train_and_evaluate(task, seed, args.device, Path(args.out), args.examples, args.existing)
            records.append(record)
            print(f"{task} seed {seed}: train error {record['train_error']:.4f}, "
                  f"4x soft {record['soft'][-1]['cell_error']:.4f}, "
                  f"4x discrete {record['discrete'][-1]['cell_error']:.4f}, {record['restarts']} restarts, "
                  f"{record['steps_trained']} steps, {record['seconds']} s", flush=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    records = merge_with_earlier(report.with_suffix(".json"), records)
    report.write_text(markdown(records, args.device))
    report.with_suffix(".json").write_text(json.dumps(records, indent=1))
    print(report.read_text())


if __name__ == "__main__":
    main()
