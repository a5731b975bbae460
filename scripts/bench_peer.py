"""nram side by side with the public Theano NRAM: its training step and forward against ours.

The peer (gibiansky/experiments, ``nram/``) runs under its own interpreter, with Theano, through
``scripts/peer_theano.py``; nram runs in this process as ``scripts/bench_machine.py`` measures it
(the shipped CPU backend, 14 gates against the peer's 8). The two alternate, round after round,
each at one thread and at two (the peer's BLAS threads through ``OPENBLAS_NUM_THREADS``), and the
table gives medians over the rounds and nram's ratio to the peer at the same threads.

Setting up the peer (once; nothing here downloads): a checkout of gibiansky/experiments, and a
virtual environment with ``theano==1.0.5 'numpy<1.24' 'scipy<1.11'`` on a machine with OpenBLAS
(Debian: libopenblas-dev); Theano needs ``THEANO_FLAGS=blas.ldflags=-lopenblas`` with that numpy.
Its first compilation takes a minute or two and is cached for the later rounds.

    python scripts/bench_peer.py --peer-dir PEER/nram --peer-python THEANO_ENV/bin/python --json peer.json

Records: {"round", "who": "nram"|"peer", "threads", "mode": "train"|"infer", "batch", "examples_per_s"}, the
peer's with "float" (the precision of its memories; its weights are float32 after its first update).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench_machine import REGISTERS, measure

MEMORY, TIMESTEPS, TRAIN_BATCH, INFER_BATCH = 10, 3, 32, 4096
PEER_SCRIPT = Path(__file__).with_name("peer_theano.py")


def peer_round(python: str, peer_dir: str, threads: int) -> dict:
    """One run of the peer's timing at ``threads`` BLAS threads: its JSON object."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    env.setdefault("THEANO_FLAGS", "blas.ldflags=-lopenblas")
    completed = subprocess.run([python, str(PEER_SCRIPT), "--peer-dir", peer_dir, "--memory", str(MEMORY),
                                "--registers", str(REGISTERS), "--timesteps", str(TIMESTEPS), "--batch", str(TRAIN_BATCH),
                                "--infer-batch", str(INFER_BATCH)], capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"the peer failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-dir", required=True, help="the peer's nram/ folder")
    parser.add_argument("--peer-python", required=True, help="an interpreter with Theano")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    records = []
    for round_ in range(args.rounds):
        for threads in (1, 2):
            peer = peer_round(args.peer_python, args.peer_dir, threads)
            records += [{"round": round_, "who": "peer", "threads": threads, "mode": "train", "batch": TRAIN_BATCH,
                         "examples_per_s": peer["train_examples_per_s"], "float": peer["float"]},
                        {"round": round_, "who": "peer", "threads": threads, "mode": "infer", "batch": INFER_BATCH,
                         "examples_per_s": peer["infer_examples_per_s"], "float": peer["float"]}]
            for mode, batch in (("train", TRAIN_BATCH), ("infer", INFER_BATCH)):
                ours = measure(mode, MEMORY, TIMESTEPS, batch, "cpu", threads, backend="fused")
                records.append({"round": round_, "who": "nram", "threads": threads, "mode": mode, "batch": batch,
                                "examples_per_s": ours["examples_per_s"]})
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)

    def median(who: str, mode: str, threads: int) -> float:
        return statistics.median(r["examples_per_s"] for r in records
                                 if (r["who"], r["mode"], r["threads"]) == (who, mode, threads))

    print(f"M = {MEMORY}, T = {TIMESTEPS}, R = {REGISTERS}; medians of {args.rounds} alternating rounds, examples/s; "
          f"the peer's memories in {records[0]['float']}, nram's in float32")
    print(f"{'mode':>6} {'batch':>6} {'threads':>8} {'peer':>10} {'nram':>10} {'ratio':>7}")
    for mode, batch in (("train", TRAIN_BATCH), ("infer", INFER_BATCH)):
        for threads in (1, 2):
            peer, ours = median("peer", mode, threads), median("nram", mode, threads)
            print(f"{mode:>6} {batch:>6} {threads:>8} {peer:>10,.0f} {ours:>10,.0f} {ours / peer:>6.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
