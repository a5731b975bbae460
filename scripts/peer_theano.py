"""Time the public Theano NRAM (gibiansky/experiments, ``nram/``) as its own code runs it.

Run by ``scripts/bench_peer.py`` under an interpreter that has Theano, not by ours: it imports
the peer's modules from ``--peer-dir`` unmodified and prints one JSON object. Training is the
peer's own step: its compiled cost-and-gradients function, then the gradient clipping, noise
and Adam update of its ``opt.adam_optimize``, fed batches already one-hot encoded in numpy (its
batch encoder builds a Theano graph per batch and is not part of the step). Inference is its
compiled forward (the memory after T steps: it does not mix the steps by the stop probabilities
as nram's output does, which favours the peer slightly). Its eight gates: READ, ZERO, ONE, TWO,
ADD, NEGATE, EQ-ZERO, WRITE. Its memories are float64; its weights float32 after its first update.

    python scripts/peer_theano.py --peer-dir PEER/nram --memory 10 --registers 2 --timesteps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


class Done(Exception):
    """Raised from the batch callback to leave the peer's open-ended optimisation loop."""


def one_hot_memories(batch: int, memory_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random integer memories ``[batch, M]`` and their one-hot encoding ``[batch, M, M]`` (float64)."""
    values = rng.integers(0, memory_size, size=(batch, memory_size))
    return values.astype(np.int32), np.eye(memory_size)[values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-dir", required=True, help="the peer's nram/ folder")
    parser.add_argument("--memory", type=int, default=10)
    parser.add_argument("--registers", type=int, default=2)
    parser.add_argument("--timesteps", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--infer-batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks; the median is reported")
    args = parser.parse_args()
    sys.path.insert(0, args.peer_dir)
    import theano
    import gate
    import nnet
    import nram
    import opt

    started = time.perf_counter()
    gates = [gate.read, gate.zero, gate.one, gate.two, gate.add, gate.negate, gate.eq_zero, gate.write]
    params = list(nnet.mlp_weights(args.registers, [args.hidden, args.hidden], gates))
    _, initial_mem, desired_mem, cost_mask, final_mem, cost, entropy_weight = nram.run(
        gates, args.registers, args.memory, args.timesteps, 2, 0.0, params)
    train = theano.function([initial_mem, desired_mem, cost_mask, entropy_weight],
                            [cost] + theano.grad(cost, params))
    predict = theano.function([initial_mem], final_mem)
    compile_s = time.perf_counter() - started

    rng = np.random.default_rng(0)
    targets, memories = one_hot_memories(args.batch, args.memory, rng)
    mask = np.ones_like(targets, dtype=np.int8)

    def train_steps(steps: int) -> float:
        """Seconds for ``steps`` of the peer's optimisation loop."""
        def make_batch(timestep: int):
            if timestep > steps:
                raise Done
            return memories, targets, mask, 0.0

        start = time.perf_counter()
        try:
            opt.adam_optimize(params, make_batch, train)
        except Done:
            pass
        return time.perf_counter() - start

    _, infer_memories = one_hot_memories(args.infer_batch, args.memory, rng)

    def infer_once() -> float:
        start = time.perf_counter()
        predict(infer_memories)
        return time.perf_counter() - start

    train_steps(20)
    per_step = [train_steps(100) / 100 for _ in range(args.repeats)]
    infer_once()
    per_forward = [infer_once() for _ in range(args.repeats)]
    print(json.dumps({"compile_s": round(compile_s, 1), "train_step_ms": 1e3 * statistics.median(per_step),
                      "train_examples_per_s": args.batch / statistics.median(per_step),
                      "infer_examples_per_s": args.infer_batch / statistics.median(per_forward),
                      "theano": theano.__version__, "float": theano.config.floatX}))


if __name__ == "__main__":
    main()
