"""Does training keep a known solution, or find the one rule it lacks? Train on from a hand program.

For each chosen setting (by default the shipped config, without gradient noise, without weight
decay, and without either; ``--setting adam-neither`` adds Adam at lr 0.003 without either)
the hand program of ``training.programs`` is distilled into a fresh controller
(``training.distil``, exact at 4x the training lengths), then trained, never restarting, with
the task's shipped config and that change, evaluating the soft per-cell error at the training
lengths, 2x and 4x every ``--every`` steps. A setting under which the error leaves 0 pushes
runs away from the solution even once they have found it. With ``--drop-rule I`` training
starts from the program without its rule I instead, one rule away from the solution: a setting
under which the error falls to 0 finds that rule. Prints a table; ``--json FILE`` also writes
the records ``{"task", "setting", "dropped_rule", "step", "lengths", "cell_error"}``.

    python scripts/solution_stability.py --task listk [--steps 3000] [--every 500] [--margin 8]
                                         [--seed 0] [--examples 500] [--json FILE]
                                         [--drop-rule I] [--setting NAME ...]
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
from training.programs import PROGRAMS, Program
from training.trainer import Trainer

SETTINGS = {
    "shipped": {},
    "no-noise": {"gradient_noise": 0.0},
    "no-decay": {"weight_decay": 0.0},
    "neither": {"gradient_noise": 0.0, "weight_decay": 0.0},
    # momentum 0 only keeps the SGD configs' momentum out of the run's saved config: Adam takes none.
    "adam-neither": {"optimizer": "adam", "lr": 0.003, "momentum": 0.0, "gradient_noise": 0.0, "weight_decay": 0.0},
}
DEFAULT_SETTINGS = ["shipped", "no-noise", "no-decay", "neither"]


def stability_curve(task: str, program: Program, overrides: dict, steps: int, every: int, margin: float,
                    seed: int, examples: int, out_dir: Path) -> Iterator[tuple[list[int], int, list[float]]]:
    """Train from ``program`` distilled into a fresh controller; yields (lengths, step, soft cell
    error per length) as it goes."""
    config = load_config(default_config_path(task), seed=seed, steps=0, eval_every=10**9,
                         checkpoint_every=10**9, restart_every=0, stop_when_solved=False, **overrides)
    trainer = Trainer(config, out_dir, progress=False)
    distil_program(trainer.model, program, margin=margin)
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
    parser.add_argument("--drop-rule", type=int, metavar="I",
                        help="start from the hand program without its rule I (0-based): does training find it?")
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS),
                        help="a setting to train under, repeatable (default: " + ", ".join(DEFAULT_SETTINGS) + ")")
    args = parser.parse_args()
    program = PROGRAMS[args.task]
    if args.drop_rule is not None:
        try:
            program = program.without_rule(args.drop_rule)
        except ValueError as error:
            parser.error(f"--drop-rule: {error}")

    records = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in dict.fromkeys(args.setting or DEFAULT_SETTINGS):
            curve = stability_curve(args.task, program, SETTINGS[name], args.steps, args.every, args.margin,
                                    args.seed, args.examples, Path(scratch) / name)
            for lengths, step, errors in curve:
                if not records:
                    start = "its hand program" if args.drop_rule is None else \
                        f"its hand program without rule {args.drop_rule}"
                    print(f"{args.task}: soft per-cell error (%) by length, from {start} at margin "
                          f"{args.margin:g}, seed {args.seed}")
                    print(f"{'setting':<18} {'step':>6} " + " ".join(f"{n:>6}" for n in lengths))
                print(f"{name:<18} {step:>6} " + " ".join(f"{100 * e:>6.1f}" for e in errors), flush=True)
                records.append({"task": args.task, "setting": name, "dropped_rule": args.drop_rule, "step": step,
                                "lengths": lengths, "cell_error": errors})
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
