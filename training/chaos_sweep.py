"""``nram chaos``: short trainings over learning rate x weight decay, read as a phase diagram.

Every run trains the task's controller with SGD (momentum ``alpha``) and records the order
parameter ``J = std(W) sqrt(N)`` of the controller's hidden-to-hidden weight matrix along the
way (Zhang, Feng et al. 2021). The diagram colours each (lr, weight decay) cell by its final
J (ordered < 1 < chaotic); the weight decay that holds J at 1 is estimated from the growth
of J^2 in the runs without decay.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from training.config import TrainConfig
from training.diagnostics import j2_slope, order_parameters, plot_phase_diagram, recommended_weight_decay
from training.trainer import Trainer


def hidden_matrix_name(model: torch.nn.Module) -> str:
    """The controller's hidden-to-hidden weight matrix: the square matrix with the most entries."""
    square = {name: p.numel() for name, p in model.controller.named_parameters()
              if p.ndim == 2 and p.shape[0] == p.shape[1]}
    if not square:
        raise ValueError("the controller has no square (hidden-to-hidden) weight matrix to measure")
    return "controller." + max(square, key=square.get)


def run_one(config: TrainConfig, out: Path, every: int) -> dict:
    """Train ``config`` and return its record: lr, weight decay, J every ``every`` steps, final loss."""
    trainer = Trainer(config, out, progress=False)
    matrix = hidden_matrix_name(trainer.model)
    steps, trajectory, losses = [], [], []
    while trainer.step < config.steps:
        if trainer.step % every == 0:
            steps.append(trainer.step)
            trajectory.append(order_parameters(trainer.model)[matrix][0])
        losses.append(trainer.train_step()["loss"])
    if trainer.step % every == 0:
        steps.append(trainer.step)
        trajectory.append(order_parameters(trainer.model)[matrix][0])
    tail = losses[-max(1, len(losses) // 10):]
    return {"lr": config.lr, "weight_decay": config.weight_decay, "momentum": config.momentum,
            "batch_size": config.batch_size, "matrix": matrix, "steps": steps, "J_trajectory": trajectory,
            "J0": order_parameters(trainer.model)[matrix][1], "final_loss": sum(tail) / len(tail)}


def sweep(base: TrainConfig, lrs: Sequence[float], weight_decays: Sequence[float], out: Path,
          every: int = 10, progress: bool = True) -> dict:
    """Run the grid, write ``phase.png`` and ``phase.json`` under ``out``; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    grid = [(lr, wd) for wd in weight_decays for lr in lrs]
    for i, (lr, weight_decay) in enumerate(grid):
        config = replace(base, optimizer="sgd", lr=lr, weight_decay=weight_decay)
        record = run_one(config, out / f"run-lr{lr:g}-wd{weight_decay:g}", every)
        records.append(record)
        if progress:
            print(f"[{i + 1}/{len(grid)}] lr {lr:g} weight decay {weight_decay:g}: "
                  f"J {record['J_trajectory'][0]:.3f} -> {record['J_trajectory'][-1]:.3f}, "
                  f"loss {record['final_loss']:.3f}", flush=True)
    undecayed = [r for r in records if r["weight_decay"] == 0]
    recommendations = {}
    for r in undecayed:
        growth = j2_slope(r["J_trajectory"], every)
        recommendations[f"{r['lr']:g}"] = recommended_weight_decay(max(growth, 0.0), r["lr"], base.momentum)
    plot_phase_diagram(records, out / "phase.png",
                       title=f"{base.task}: order parameter J = std(W) sqrt(fan-in) of the controller's "
                             f"hidden-to-hidden weights ({records[0]['matrix']}), SGD momentum {base.momentum}, "
                             f"{base.steps} steps per run")
    report = {"task": base.task, "momentum": base.momentum, "batch_size": base.batch_size,
              "steps": base.steps, "records": records, "recommended_weight_decay": recommendations}
    (out / "phase.json").write_text(json.dumps(report, indent=1))
    return report

