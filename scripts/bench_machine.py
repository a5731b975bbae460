"""Training and inference throughput of the soft machine, in examples per second.

Training = forward + backward + Adam step (as `nram train` builds it) on random memories; inference = the
streamed forward (``NRAM.output_memory``) in eval mode under ``torch.no_grad``, as ``nram eval`` runs it.
Medians of repeated timings.

    python scripts/bench_machine.py                 # the full table on cpu (and cuda if present)
    python scripts/bench_machine.py --quick         # the headline settings only
    python scripts/bench_machine.py --json out.json --threads 1,2 --compile
    python scripts/bench_machine.py --quick --backend fused,native,pytorch --rounds 5   # the CPU paths side by side
    python scripts/bench_machine.py --quick --population 16 --rounds 5   # 16 members vs one model, side by side

Records: {"mode": "train"|"infer", "M", "R", "T", "batch", "population", "device", "backend", "examples_per_s",
"flops_per_example", "gflops_per_s", "peak_fraction", ...}. FLOPs are counted from the circuit
(:mod:`nram.flops`: gates, READ and WRITE at M, choices, controller; a training step counts three
forwards); ``peak_fraction`` is GFLOP/s over the peak of the cores used (vector width x FMA x
pipes x clock, as :func:`nram.flops.cpu_peak` reads them; None off the CPU or where unknown).
``batch`` is per member; a population's examples/s counts every member's examples. With
``--population P`` every training setting runs for one model and for P members (one
:class:`nram.population.PopulationNRAM` stepped by :class:`training.optim.members.MemberAdam`,
as ``nram train --population`` does), alternating, and the summary gives their ratio.
Backends on the CPU (see nram/native.py): "fused" as shipped (one model's whole training
rollout, forward and backward, in one C call: ``NRAM.train_rollout_natively``, as ``nram train``
runs a plain MLP without entropy bonus or choice noise, then Adam's update in one more
(``training.optim.NativeAdam``); a population, whose batched PyTorch
step is faster at these sizes than one such call per member, and inference as in "native"),
"native" (the C step once per timestep under autograd, the training path before the one-call
rollout; the C inference) and "pytorch" (NRAM_NATIVE=0). With several backends and
``--rounds N`` the backends alternate N times per setting, and the summary gives the median of
the rounds and their ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

from nram.flops import CpuPeak, cpu_peak, rollout_flops
from nram.model import NRAM, MachineConfig, example_losses, rollout_loss
from nram.population import PopulationNRAM
from training.optim import make_optimizer
from training.optim.members import MemberAdam

REGISTERS = 2
BACKENDS = {"fused": "1", "native": "1", "pytorch": "0"}  # the NRAM_NATIVE value of each


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, device: str, min_time: float = 0.4, repeats: int = 5) -> float:
    """Median wall time of one call of ``fn`` over ``repeats`` timed blocks of ~min_time/repeats each."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    calls = max(1, int(min_time / repeats / max(time.perf_counter() - start, 1e-6)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def make_train_step(model: NRAM, memory: torch.Tensor, steps: int, compile_model: bool, fused: bool):
    optimizer = make_optimizer("adam", model.parameters(), lr=1e-3, native=fused)  # as `nram train` builds it
    mask = torch.ones_like(memory, dtype=torch.bool)
    if fused:
        def fused_step():
            optimizer.zero_grad(set_to_none=True)
            model.train_rollout_natively(memory, memory, mask, steps, scale=1 / memory.shape[0], eps=1e-6)
            optimizer.step()

        return fused_step

    def loss_fn():
        return rollout_loss(model(memory, steps), memory, mask)

    loss_fn = torch.compile(loss_fn) if compile_model else loss_fn

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def make_population_step(model: PopulationNRAM, memory: torch.Tensor, steps: int):
    """One step of every member, as ``nram train --population`` takes it: each member's mean loss."""
    optimizer = MemberAdam(model.parameters(), lr=torch.full((model.size,), 1e-3))
    mask = torch.ones_like(memory, dtype=torch.bool)
    batch = memory.shape[0] // model.size

    def step():
        optimizer.zero_grad(set_to_none=True)
        (example_losses(model(memory, steps), memory, mask).sum() / batch).backward()
        optimizer.step()

    return step


def measure(mode: str, memory_size: int, steps: int, batch: int, device: str, threads: int,
            compile_model: bool = False, backend: str = "native", population: int = 1,
            peak: CpuPeak | None = None) -> dict:
    os.environ["NRAM_NATIVE"] = BACKENDS[backend]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = MachineConfig(num_registers=REGISTERS)
    model = (PopulationNRAM(config, population) if population > 1 else NRAM(config)).to(device)
    memory = torch.randint(0, memory_size, (population * batch, memory_size), device=device)
    if mode == "train" and population > 1:
        fn = make_population_step(model, memory, steps)
    elif mode == "train":
        fused = backend == "fused" and model.trains_natively() and not compile_model
        fn = make_train_step(model, memory, steps, compile_model, fused)
    else:
        model.eval()  # as `nram eval` runs it
        forward = torch.compile(model.output_memory) if compile_model else model.output_memory

        def fn():
            with torch.no_grad():
                forward(memory, steps)
    first = time.perf_counter()
    fn()
    synchronize(device)
    first_call = time.perf_counter() - first
    seconds = median_seconds(fn, device)
    backend = backend if device == "cpu" else "pytorch"
    examples_per_s = population * batch / seconds
    flops = rollout_flops(NRAM(config), memory_size, steps, training=mode == "train")
    peak = peak if device == "cpu" else None
    return {"mode": mode, "M": memory_size, "R": REGISTERS, "T": steps, "batch": batch, "population": population,
            "device": device, "backend": backend, "threads": threads, "compile": compile_model,
            "first_call_s": round(first_call, 3), "step_ms": round(seconds * 1e3, 4),
            "examples_per_s": round(examples_per_s, 1), "flops_per_example": flops,
            "gflops_per_s": round(flops * examples_per_s / 1e9, 3),
            "peak_fraction": round(flops * examples_per_s / peak.flops_per_s(threads), 5) if peak else None}


def settings(quick: bool) -> list[tuple[str, int, int, int]]:
    if quick:
        return [("train", 10, 3, 32), ("infer", 10, 3, 4096)]
    out = []
    for memory_size in (10, 16, 32, 64):
        for steps in sorted({3, memory_size}):
            out += [("train", memory_size, steps, 32), ("train", memory_size, steps, 256),
                    ("infer", memory_size, steps, 256), ("infer", memory_size, steps, 4096)]
    return out


def fitted_exponent(records: list[dict], mode: str, batch: int) -> float | None:
    """Slope of log(time per step) against log(M) at T = 3: how time per step grows with M."""
    points = [(math.log(r["M"]), math.log(r["step_ms"] / r["T"])) for r in records
              if r["mode"] == mode and r["batch"] == batch and r["T"] == 3 and not r["compile"]]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


HEADER = f"{'mode':>5} {'device':>6} {'backend':>7} {'thr':>3} {'comp':>4} {'M':>3} {'T':>3} {'batch':>5} " \
         f"{'P':>3} {'ms/step':>9} {'examples/s':>11} {'kFLOP/ex':>9} {'GFLOP/s':>8} {'% peak':>6} {'first call s':>12}"


def print_table(records: list[dict], header: bool = True) -> None:
    if header:
        print(HEADER)
        print("-" * len(HEADER))
    for r in records:
        print(f"{r['mode']:>5} {r['device']:>6} {r['backend']:>7} {r['threads']:>3} {'yes' if r['compile'] else 'no':>4} "
              f"{r['M']:>3} {r['T']:>3} {r['batch']:>5} {r['population']:>3} {r['step_ms']:>9.3f} "
              f"{r['examples_per_s']:>11.0f} {r['flops_per_example'] / 1e3:>9.1f} {r['gflops_per_s']:>8.2f} "
              f"{'-' if r['peak_fraction'] is None else format(100 * r['peak_fraction'], '.2f'):>6} "
              f"{r['first_call_s']:>12.2f}")


def median_rounds(records: list[dict]) -> list[dict]:
    """One record per setting and backend: the round with the median examples/s, with all rounds listed."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = tuple(r[k] for k in ("mode", "M", "T", "batch", "population", "device", "backend", "threads", "compile"))
        groups.setdefault(key, []).append(r)
    out = []
    for rounds in groups.values():
        median = sorted(rounds, key=lambda r: r["examples_per_s"])[(len(rounds) - 1) // 2]
        out.append({**median, "rounds": [r["examples_per_s"] for r in rounds]})
    return out


def print_backend_ratios(records: list[dict]) -> None:
    """fused / native and native / pytorch examples/s for every training setting measured with both."""
    by_key = {(r["mode"], r["M"], r["T"], r["batch"], r["threads"], r["backend"]): r for r in records
              if r["device"] == "cpu" and not r["compile"] and r["population"] == 1}
    for (mode, memory_size, steps, batch, threads, backend), r in by_key.items():
        for faster, slower in (("fused", "native"), ("native", "pytorch")):
            other = by_key.get((mode, memory_size, steps, batch, threads, slower))
            if backend == faster and other and (mode == "train" or faster != "fused"):
                print(f"{mode} M={memory_size} T={steps} batch {batch} threads={threads}: {faster} / {slower} = "
                      f"{r['examples_per_s'] / other['examples_per_s']:.2f} (medians of {len(r['rounds'])} rounds)")


def print_population_ratios(records: list[dict]) -> None:
    """P members' examples/s over one model's, for every training setting measured both ways."""
    single = {(r["M"], r["T"], r["batch"], r["device"], r["backend"], r["threads"]): r for r in records
              if r["mode"] == "train" and r["population"] == 1 and not r["compile"]}
    for r in records:
        one = single.get((r["M"], r["T"], r["batch"], r["device"], r["backend"], r["threads"]))
        if r["mode"] == "train" and r["population"] > 1 and one:
            print(f"{r['device']} {r['backend']} threads={r['threads']} M={r['M']} T={r['T']} batch {r['batch']}: "
                  f"{r['population']} members / one model = {r['examples_per_s'] / one['examples_per_s']:.2f}x "
                  f"examples/s (medians of {len(r['rounds'])} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only M=10, T=3: train batch 32, infer batch 4096")
    parser.add_argument("--device", action="append", help="cpu, cuda (default: cpu, and cuda when present)")
    parser.add_argument("--threads", default=None, help="comma-separated CPU thread counts to compare")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile at M=10, T=3")
    parser.add_argument("--backend", default="fused",
                        help="comma-separated CPU paths to compare: fused (as shipped), native, pytorch")
    parser.add_argument("--rounds", type=int, default=1, help="times each setting is measured, backends alternating")
    parser.add_argument("--population", type=int, default=1,
                        help="also train P members as one vectorised model, beside one model")
    parser.add_argument("--json", metavar="FILE", help="write the records as a JSON list")
    args = parser.parse_args()
    if args.population < 1:
        parser.error(f"--population needs at least 1 member, got {args.population}")
    populations = sorted({1, args.population})
    backends = args.backend.split(",")
    if not set(backends) <= set(BACKENDS):
        parser.error(f"--backend takes {', '.join(BACKENDS)}, got {args.backend}")
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    peak = cpu_peak()
    if "cpu" in devices:
        print(f"peak per core: {peak.describe()} = {peak.flops_per_s(1) / 1e9:.1f} GFLOP/s float32" if peak
              else "peak per core: unknown (no /proc/cpuinfo, or a vector unit it does not know); % peak left out")
    default_threads = torch.get_num_threads()
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [default_threads]
    records = []

    def write_json(rows: list[dict]) -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)

    def record(result: dict) -> None:
        """Print one row at once and rewrite the JSON, so an interrupted run keeps what it measured."""
        records.append(result)
        print_table(records[-1:], header=len(records) == 1)
        sys.stdout.flush()
        write_json(records)

    for device in devices:
        for threads in (thread_counts if device == "cpu" else [default_threads]):
            for mode, memory_size, steps, batch in settings(args.quick):
                for _ in range(args.rounds):
                    for backend in (backends if device == "cpu" else ["pytorch"]):
                        for population in (populations if mode == "train" else [1]):
                            record(measure(mode, memory_size, steps, batch, device, threads, backend=backend,
                                           population=population, peak=peak))
            if args.compile:
                for mode, batch in (("train", 32), ("infer", 4096)):
                    record(measure(mode, 10, 3, batch, device, threads, compile_model=True,
                                   backend="pytorch" if backends[0] == "pytorch" else "native", peak=peak))
    print()
    records = median_rounds(records)
    write_json(records)
    print_table(records)
    print_backend_ratios(records)
    print_population_ratios(records)
    for mode, batch in (("train", 256), ("infer", 4096)):
        exponent = fitted_exponent([r for r in records if r["device"] == devices[0] and r["backend"] == backends[0]
                                    and r["threads"] == thread_counts[-1] and r["population"] == 1], mode, batch)
        if exponent is not None:
            print(f"{devices[0]} {mode} batch {batch}: time per step grows as M^{exponent:.2f} (T = 3)")


if __name__ == "__main__":
    main()
