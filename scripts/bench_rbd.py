"""Step time and peak extra memory of random-bases descent against SGD, a stored basis and the floor.

For D parameters (one flat parameter, a fixed gradient) and d directions, per step:

- ``sgd``: ``torch.optim.SGD`` (no directions at all);
- ``rbd``: :class:`training.optim.RandomBasesDescent`, one global compartment, directions
  regenerated chunk by chunk from counter-based seeds;
- ``stored``: the conventional implementation: the whole ``[d, D]`` basis drawn into memory
  (one ``randn``), then ``c = V g`` and ``theta -= lr/D V^T c``; skipped when the basis would
  exceed ``--max-basis-bytes``;
- ``floor``: the work no implementation avoids, in the same chunks as rbd: ``d * D`` normals
  drawn into one reused buffer (one generator, never reseeded) and two passes over them
  (``c = V g`` and ``u += V^T c``).

Step time: median of ``--repeats`` timed steps after one warm-up (CUDA synchronised).
Peak extra memory: bytes allocated during one step beyond what existed before it. On CUDA,
``torch.cuda.max_memory_allocated`` minus the allocation before the step; on CPU, the peak
of the running sum of the allocation and free events the torch profiler records
(``profile_memory=True``), in a separate untimed step. Both count torch tensors only.

    python scripts/bench_rbd.py --quick
    python scripts/bench_rbd.py --json bench_rbd.json [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from training.optim import RandomBasesDescent, chunk_grid


def peak_extra_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated by ``fn()`` on ``device`` beyond those live before the call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def median_ms(fns: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median wall time in milliseconds of each ``fn()``, after one warm-up call each.

    The functions take turns (round robin), so a slow spell of a shared machine hits all of them.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _stored_step(theta: torch.Tensor, grad: torch.Tensor, dims: int) -> Callable[[], None]:
    """The conventional step: the whole ``[dims, D]`` basis in memory at once."""
    def step() -> None:
        v = torch.randn(dims, theta.numel(), device=theta.device)
        theta.addmv_(v.T, v @ grad, alpha=-1.0 / theta.numel())
    return step


def _floor_step(theta: torch.Tensor, grad: torch.Tensor, dims: int, chunk_size: int) -> Callable[[], None]:
    """``dims * D`` normals in rbd's chunks, one generator never reseeded, two passes per chunk."""
    rows, _ = chunk_grid(dims, theta.numel(), chunk_size)
    if theta.numel() > chunk_size:
        raise ValueError("the floor is written for chunks of whole rows: raise --chunk-size above D")
    generator = torch.Generator(device=theta.device).manual_seed(0)

    def step() -> None:
        buffer = torch.empty(rows, theta.numel(), device=theta.device)
        for r0 in range(0, dims, rows):
            v = buffer[:min(rows, dims - r0)].normal_(generator=generator)
            theta.addmv_(v.T, v @ grad, alpha=-1.0 / theta.numel())
    return step


def bench(sizes: list[int], dims_list: list[int], device: torch.device, repeats: int, chunk_size: int,
          max_basis_bytes: float) -> list[dict]:
    """One record per (method, D, dims): median step time, peak extra bytes, ratio to the floor."""
    records = []
    for size in sizes:
        theta = torch.nn.Parameter(torch.zeros(size, device=device))
        grad = torch.randn(size, device=device)
        theta.grad = grad
        sgd = torch.optim.SGD([theta], lr=0.01)
        records.append({"method": "sgd", "D": size, "dims": None, "compartments": None,
                        "step_ms": median_ms({"sgd": sgd.step}, repeats, device)["sgd"],
                        "peak_extra_bytes": peak_extra_bytes(sgd.step, device)})
        for dims in dims_list:
            rbd = RandomBasesDescent([theta], lr=1.0, dims=dims, compartments="global", chunk_size=chunk_size)
            methods = {"rbd": rbd.step, "floor": _floor_step(theta.data, grad, dims, chunk_size)}
            if 4 * dims * size <= max_basis_bytes:
                methods["stored"] = _stored_step(theta.data, grad, dims)
            else:
                print(f"stored basis skipped at D={size:.0e}, dims={dims}: {4 * dims * size / 1e9:.1f} GB "
                      f"> --max-basis-bytes {max_basis_bytes / 1e9:.1f} GB")
                records.append({"method": "stored", "D": size, "dims": dims, "compartments": "global",
                                "step_ms": None, "peak_extra_bytes": None,
                                "skipped": f"basis would need {4 * dims * size} bytes > --max-basis-bytes"})
            step_ms = median_ms(methods, repeats, device)
            for name, fn in methods.items():
                records.append({"method": name, "D": size, "dims": dims, "compartments": "global",
                                "step_ms": step_ms[name], "peak_extra_bytes": peak_extra_bytes(fn, device),
                                "vs_floor": step_ms[name] / step_ms["floor"]})
    for r in records:
        r["device"] = str(device)
    return records


def table(records: list[dict]) -> str:
    """The records as a text table sorted by D, dims and method."""
    lines = [f"{'D':>9} {'dims':>5} {'method':>7} {'step ms':>10} {'/ floor':>8} {'peak extra MB':>14}"]
    for r in sorted(records, key=lambda r: (r["D"], r["dims"] or 0, r["method"])):
        ms = "skipped" if r["step_ms"] is None else f"{r['step_ms']:.3f}"
        ratio = f"{r['vs_floor']:.2f}" if "vs_floor" in r else ""
        peak = "-" if r["peak_extra_bytes"] is None else f"{r['peak_extra_bytes'] / 2**20:.2f}"
        lines.append(f"{r['D']:>9.0e} {r['dims'] or '-':>5} {r['method']:>7} {ms:>10} {ratio:>8} {peak:>14}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="D in {1e4, 1e5}, dims in {10, 250}, 3 repeats")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per measurement (median)")
    parser.add_argument("--chunk-size", type=int, default=1 << 22, help="direction entries per chunk")
    parser.add_argument("--max-basis-bytes", type=float, default=4e9, help="largest stored basis to try")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="write the records to this file")
    args = parser.parse_args()
    sizes, dims_list, repeats = [10**4, 10**5, 10**6], [10, 100, 250, 1000], args.repeats
    if args.quick:
        sizes, dims_list, repeats = [10**4, 10**5], [10, 250], 3
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"chunk {args.chunk_size} entries, median of {repeats}")
    records = bench(sizes, dims_list, device, repeats, args.chunk_size, args.max_basis_bytes)
    print(table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
