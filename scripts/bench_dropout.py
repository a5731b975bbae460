"""Batchwise vs masked (samplewise) dropout: step time of a layer and of a controller rollout.

Single thread (``torch.set_num_threads(1)``), CPU, medians over ``--reps`` timed repetitions
after warm-up, masked and batchwise timed alternately. Every repetition is one minibatch: draw the dropout pattern, forward,
backward, ``torch.optim.SGD`` step.

- ``layer``: one ``n x n`` layer inside a stack, dropout rate ``p`` on its input and its
  output. Masked: ``y = (x W^T + b) * m``, ``x [B, n]``, per-example Bernoulli mask ``m``.
  Batchwise: ``x [B, k]`` arrives compact, ``y = s x W[K_out, K_in]^T + b[K_out]`` ``[B, k]``.
- ``rollout``: the NRAM controller shape: a 2-hidden-layer ReLU MLP of width ``n`` from R
  register flags to all NRAM logits, applied ``--steps`` times per rollout with one pattern
  per rollout, a cheap differentiable stand-in for the machine between steps (next input =
  sigmoid of the first R logits plus the old input), the loss summed over steps.
  Masked = :class:`nram.layers.SamplewiseDropoutMLP`, batchwise =
  :class:`nram.layers.BatchwiseDropoutMLP`.

    python scripts/bench_dropout.py [--reps 15] [--json bench_dropout.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from nram.circuit import CircuitLayout
from nram.layers import (BatchwiseDropoutLinear, BatchwiseDropoutMLP, SamplewiseDropoutMLP, keep_indices,
                         kept_count)

LAYER_SIZES = (256, 512, 1024, 2048)
ROLLOUT_SIZES = (256, 512, 1024)
BATCHES = (64, 256)
RATES = (0.25, 0.5)


def paired_median_ms(masked: Callable[[], None], batchwise: Callable[[], None], reps: int,
                     warmup: int = 3) -> tuple[float, float]:
    """Median wall times of the two steps in milliseconds, timed alternately (so that load from
    other processes hits both alike)."""
    for _ in range(warmup):
        masked()
        batchwise()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for step, record in zip((masked, batchwise), times):
            start = time.perf_counter()
            step()
            record.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1])


def layer_case(n: int, batch: int, p: float, reps: int, generator: torch.Generator) -> dict:
    """One n x n layer, forward + backward (input and weight gradients) + SGD step."""
    masked = torch.nn.Linear(n, n)
    masked_opt = torch.optim.SGD(masked.parameters(), lr=1e-3)
    x_full = torch.randn(batch, n, requires_grad=True)
    g_full = torch.randn(batch, n)

    def masked_step() -> None:
        mask = (torch.rand(batch, n, generator=generator) < 1 - p).float() / (1 - p)
        (F.linear(x_full, masked.weight, masked.bias) * mask * g_full).sum().backward()
        masked_opt.step()
        masked_opt.zero_grad()

    k = kept_count(n, p)
    layer = BatchwiseDropoutLinear(n, n, p=p)
    layer_opt = torch.optim.SGD(layer.parameters(), lr=1e-3)
    x_kept = torch.randn(batch, k, requires_grad=True)
    g_kept = torch.randn(batch, k)

    def batchwise_step() -> None:
        in_keep = keep_indices(n, p, generator=generator)  # the previous layer's pattern
        layer.resample(generator)
        (layer(x_kept, in_keep) * g_kept).sum().backward()
        layer_opt.step()
        layer_opt.zero_grad()

    return _record("layer", n, batch, p, 1, *paired_median_ms(masked_step, batchwise_step, reps))


def rollout_case(hidden: int, batch: int, p: float, steps: int, registers: int, reps: int,
                 generator: torch.Generator) -> dict:
    """A whole controller rollout: resample, ``steps`` MLP applications, backward, SGD step."""
    outputs = CircuitLayout(registers).num_logits  # all 14 gates: 308 logits for R = 4
    x0 = torch.rand(batch, registers, generator=generator)
    target = torch.randn(outputs, generator=generator)

    def make_step(model: torch.nn.Module) -> Callable[[], None]:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step() -> None:
            model.resample(generator)
            x, loss = x0, x0.new_zeros(())
            for _ in range(steps):
                logits = model(x)
                loss = loss + (logits * target).mean()
                x = torch.sigmoid(logits[:, :registers] + x)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        return step

    masked = make_step(SamplewiseDropoutMLP(registers, hidden, outputs, p=p))
    batchwise = make_step(BatchwiseDropoutMLP(registers, hidden, outputs, p=p))
    return _record("rollout", hidden, batch, p, steps, *paired_median_ms(masked, batchwise, reps))


def _record(bench: str, n: int, batch: int, p: float, steps: int, masked_ms: float,
            batchwise_ms: float) -> dict:
    return {"bench": bench, "n": n, "batch": batch, "p": p, "steps": steps, "masked_ms": round(masked_ms, 3),
            "batchwise_ms": round(batchwise_ms, 3), "speedup": round(masked_ms / batchwise_ms, 3)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions per case (median reported)")
    parser.add_argument("--steps", type=int, default=10, help="controller applications per rollout (T)")
    parser.add_argument("--registers", type=int, default=4, help="NRAM registers R (controller input size)")
    parser.add_argument("--json", metavar="FILE", help="also write the records as a JSON list")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)

    records = []
    print(f"{'bench':8} {'n':>5} {'batch':>5} {'p':>5} {'T':>3} {'masked_ms':>10} {'batchwise_ms':>12} "
          f"{'speedup':>8}", flush=True)
    cases = [("layer", n, b, p) for n in LAYER_SIZES for b in BATCHES for p in RATES]
    cases += [("rollout", n, b, p) for n in ROLLOUT_SIZES for b in BATCHES for p in RATES]
    for bench, n, batch, p in cases:
        torch.manual_seed(0)
        if bench == "layer":
            record = layer_case(n, batch, p, args.reps, generator)
        else:
            record = rollout_case(n, batch, p, args.steps, args.registers, args.reps, generator)
        records.append(record)
        print(f"{bench:8} {n:5d} {batch:5d} {p:5.2f} {record['steps']:3d} {record['masked_ms']:10.2f} "
              f"{record['batchwise_ms']:12.2f} {record['speedup']:7.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return records


if __name__ == "__main__":
    main()
