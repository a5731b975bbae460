"""Does training keep a known solution? Start from a task's hand program and train on.

For each setting (the shipped config; without gradient noise; without weight decay; without
either) the hand program of ``training.programs`` is distilled into a fresh controller
(``training.distil``, exact at 4x the training lengths), then trained, never restarting, with
the task's shipped config and that change, evaluating the soft per-cell error at the training lengths, 2x and 4x
every ``--every`` steps. A setting under which the error leaves 0 pushes runs away from the
solution even once they have found it. Prints a table; ``--json FILE`` also writes the records
``{"task", "setting", "step", "lengths", "cell_error"}``.

    python scripts/solution_stability.py --task listk [--steps 3000] [--every 500] [--margin 8]
                                         [--seed 0] [--examples 500] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from training.config import default_config_path, load_config
from training.distil import distil_program
from training.programs import PROGRAMS
from training.trainer import Trainer

SETTINGS = {
    "shipped": {},
    "no gradient noise": {"gradient_noise": 0.0},
    "no weight decay": {"weight_decay": 0.0},
    "neither": {"gradient_noise": 0.0, "weight_decay": 0.0},
}


def stability_curve(task: str, overrides: dict, steps: int, every: int, margin: float, seed: int,
                    examples: int, out_dir: Path) -> Iterator[tuple[list[int], int, list[float]]]:
    """Train from the distilled program; yields (lengths, step, soft cell error per length) as it goes."""
    config = load_config(default_config_path(task), seed=seed, steps=0, eval_every=10**9,
                         checkpoint_every=10**9, restart_every=0, stop_when_solved=False, **overrides)
    trainer = Trainer(config, out_dir, progress=False)
    distil_program(trainer.model, PROGRAMS[task], margin=margin)
    longest = config.max_length
    lengths = list(range(config.min_length, longest + 1)) + [2 * longest, 4 * longest]
    for step in sorted({*range(0, steps, every), steps}):
        if step:
            trainer.config = dataclasses.replace(config, steps=step)
            trainer.train()
        yield lengths, step, [record["cell_error"] for record in trainer.evaluate(lengths, examples=examples)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(PROGRAMS))
    parser.add_argument("--steps", type=int, default=3000, help="training steps from the program")
    parser.add_argument("--every", type=int, default=500, help="evaluate every this many steps")
    parser.add_argument("--margin", type=float, default=8.0, help="logit margin of the distilled choices")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights (which the program is fitted from), batches and noise")
    parser.add_argument("--examples", type=int, default=500, help="evaluation examples per length")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON records")
    args = parser.parse_args()

    records = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, overrides in SETTINGS.items():
            curve = stability_curve(args.task, overrides, args.steps, args.every, args.margin,
                                    args.seed, args.examples, Path(scratch) / name.replace(" ", "-"))
            for lengths, step, errors in curve:
                if not records:
                    print(f"{args.task}: soft per-cell error (%) by length, from its hand program at margin "
                          f"{args.margin:g}, seed {args.seed}")
                    print(f"{'setting':<18} {'step':>6} " + " ".join(f"{n:>6}" for n in lengths))
                print(f"{name:<18} {step:>6} " + " ".join(f"{100 * e:>6.1f}" for e in errors), flush=True)
                records.append({"task": args.task, "setting": name, "step": step, "lengths": lengths,
                                "cell_error": errors})
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
