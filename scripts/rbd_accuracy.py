"""Accuracy of SGD, random-bases descent (per-module and global) and fixed projection, offline.

The paper's FC network (``in -> 128 ReLU -> 10``), d = 250 directions, batch 32, plain steps
(no momentum), on data generated or bundled locally:

- ``mnist1d`` (default): MNIST-1D (``pip install mnist1d``), generated procedurally with its
  default arguments (4000 train, 1000 test, 40 features); nothing is downloaded;
- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 64 features), last 20% as test.

Protocol: the last ``--val`` training examples are held out; every learning rate of a method's
sweep is trained with seed 0 and scored on them; the best one is run with the other seeds; the
table gives test accuracy (mean and spread over seeds), its ratio to SGD's, and the paper's
ratios on FC-MNIST (RBD 0.96, FPD 0.81; Gressmann et al. 2020, Table 1).

    python scripts/rbd_accuracy.py --quick
    python scripts/rbd_accuracy.py [--dataset digits] [--json rbd_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import Tensor, nn

from training.optim import make_optimizer

METHODS: dict[str, dict] = {  # optimizer name, options, learning rates swept
    "sgd": {"name": "sgd", "options": {}, "lrs": [0.1, 0.3, 1.0]},
    "rbd-module": {"name": "rbd", "options": {"compartments": "module"}, "lrs": [1.0, 2.0, 4.0]},
    "rbd-global": {"name": "rbd", "options": {"compartments": "global"}, "lrs": [0.5, 1.0, 2.0]},
    "fpd": {"name": "fpd", "options": {"compartments": "global"}, "lrs": [0.5, 1.0, 2.0]},
}
PAPER_RATIO = {"sgd": 1.0, "rbd-module": 0.96, "rbd-global": 0.96, "fpd": 0.81}


def load(dataset: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train [N, F], y_train [N], x_test, y_test)``, features standardised by train statistics."""
    if dataset == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset
        data = make_dataset(get_dataset_args())
        x, y, xt, yt = data["x"], data["y"], data["x_test"], data["y_test"]
    elif dataset == "digits":
        from sklearn.datasets import load_digits
        features, labels = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(labels))
        split = int(0.8 * len(labels))
        x, y = features[order[:split]], labels[order[:split]]
        xt, yt = features[order[split:]], labels[order[split:]]
    else:
        raise ValueError(f"unknown dataset {dataset!r}; valid: mnist1d, digits")
    mean, std = x.mean(0), x.std(0) + 1e-6

    def standardised(a: np.ndarray) -> Tensor:
        return torch.tensor((a - mean) / std, dtype=torch.float32)

    return standardised(x), torch.tensor(y, dtype=torch.long), standardised(xt), torch.tensor(yt, dtype=torch.long)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(method: str, lr: float, seed: int, steps: int, dims: int, x: Tensor, y: Tensor) -> nn.Module:
    """``steps`` steps of batch 32 over shuffled epochs; the seed sets weights, batches and directions."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Linear(128, 10))
    spec = METHODS[method]
    extra = {"dims": dims, "seed": seed, **spec["options"]} if spec["name"] in ("rbd", "fpd") else {}
    opt = make_optimizer(spec["name"], model.named_parameters(), lr=lr, **extra)
    generator = torch.Generator().manual_seed(seed)
    order, position = torch.randperm(len(y), generator=generator), 0
    for _ in range(steps):
        if position + 32 > len(y):
            order, position = torch.randperm(len(y), generator=generator), 0
        batch = order[position:position + 32]
        position += 32
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist1d", choices=["mnist1d", "digits"])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dims", type=int, default=250, help="directions per compartment")
    parser.add_argument("--val", type=int, default=500, help="training examples held out to pick lr")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="400 steps, 1 seed, the middle lr only")
    parser.add_argument("--json", help="write every run's result to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, seeds = (400, 1) if args.quick else (args.steps, args.seeds)
    x, y, x_test, y_test = load(args.dataset)
    x_fit, y_fit, x_val, y_val = x[:-args.val], y[:-args.val], x[-args.val:], y[-args.val:]
    n_params = x.shape[1] * 128 + 128 + 128 * 10 + 10
    print(f"{args.dataset}: {len(y_fit)} train, {len(y_val)} val, {len(y_test)} test, {x.shape[1]} features; "
          f"D = {n_params}, d = {args.dims}, batch 32, {steps} steps ({steps * 32 / len(y_fit):.0f} epochs)")
    runs, summary = [], {}
    for method, spec in METHODS.items():
        start = time.perf_counter()
        lrs = spec["lrs"][1:2] if args.quick else spec["lrs"]
        val = {}
        for lr in lrs:
            model = train(method, lr, 0, steps, args.dims, x_fit, y_fit)
            val[lr] = accuracy(model, x_val, y_val)
            runs.append({"method": method, "lr": lr, "seed": 0, "val_acc": val[lr],
                         "test_acc": accuracy(model, x_test, y_test)})
        best = max(val, key=val.get)
        for seed in range(1, seeds):
            model = train(method, best, seed, steps, args.dims, x_fit, y_fit)
            runs.append({"method": method, "lr": best, "seed": seed, "val_acc": accuracy(model, x_val, y_val),
                         "test_acc": accuracy(model, x_test, y_test)})
        tests = [r["test_acc"] for r in runs if r["method"] == method and r["lr"] == best]
        summary[method] = {"lr": best, "mean": statistics.mean(tests), "std": statistics.pstdev(tests),
                           "val_by_lr": val, "seconds": time.perf_counter() - start}
        print(f"  {method}: val accuracy by lr {val}, {summary[method]['seconds']:.0f} s")
    sgd = summary["sgd"]["mean"]
    print(f"\n{'method':<11} {'lr':>5} {'test acc % (seeds)':>22} {'ratio to SGD':>13} {'paper FC-MNIST':>15}")
    for method, s in summary.items():
        print(f"{method:<11} {s['lr']:>5} {100 * s['mean']:>14.2f} ± {100 * s['std']:<5.2f} "
              f"{s['mean'] / sgd:>13.3f} {PAPER_RATIO[method]:>15.2f}")
    means = [summary[m]["mean"] for m in METHODS]
    holds = all(a > b for a, b in zip(means, means[1:]))
    print(f"paper's order SGD > rbd-module > rbd-global > fpd: {'holds' if holds else 'does NOT hold'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": args.dataset, "steps": steps, "dims": args.dims, "D": n_params,
                       "summary": summary, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
