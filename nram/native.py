"""The machine step in C, for the CPU: compiled on first use, called through ctypes.

At the batch sizes NRAM runs at, the PyTorch step (:mod:`nram.machine`) is a few hundred small
tensor operations per timestep, and their per-call overhead costs more than their arithmetic.
``native_step.c`` runs the whole step, forward or backward, in one call per timestep, with the
same formulas in the same order. It needs no new dependency: the first time a process asks for
it, the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) builds it into a cache
directory (``$NRAM_CACHE_DIR``, else ``~/.cache/nram``) in about a second, once per float type
and CPU. Where no compiler works the machine warns once and runs the PyTorch step.

By default the C code runs where no gradient is needed (evaluation, ``nram eval``, inference);
training keeps the PyTorch step, with which the shipped results were measured.
``NRAM_NATIVE=train`` uses the C step for training too (1.6-2.3x faster); ``NRAM_NATIVE=0``
turns the C code off. Each C step agrees with the PyTorch one to float rounding (about 1e-7 in
float32, 1e-15 in float64). Training is chaotic, so a run with either step takes its own path,
but they succeed about as often: on Swap and Reverse, 36 seeds each, the PyTorch step solved
18 and the C step 14 (docs/speed.md).

Shapes are value-major, as in :mod:`nram.machine`: memory ``[M, M, B]``, registers ``[R, M, B]``,
weights ``[K, S, B]`` (K = R + Q sources, S choice slots). Inference has its own entry,
:class:`TiledInference`: it keeps the batch tile by tile and runs the whole step (softmax, gates,
stop distribution) while a tile is in the cache.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from nram.circuit import CircuitLayout
from nram.gates import GATE_NAMES

SOURCE = Path(__file__).with_name("native_step.c")
C_TYPES = {torch.float32: "float", torch.float64: "double"}
PARALLEL_MIN_BATCH = 1024
"""From this batch size on, a call is split across ``torch.get_num_threads()`` threads (ctypes
releases the GIL); below it one thread is faster than handing work out."""

_FLAG_SETS = (("-O3", "-march=native"), ("-O3",))  # the second for compilers without -march=native


def usable(tensor: Tensor, training: bool = False) -> bool:
    """Whether the C code runs on ``tensor`` (compiling it if needed): a CPU float32/float64
    tensor, unless ``NRAM_NATIVE=0``; and where gradients are needed (``training``) only with
    ``NRAM_NATIVE=train``."""
    mode = os.environ.get("NRAM_NATIVE", "1")
    if mode == "0" or (training and mode != "train"):
        return False
    return tensor.device.type == "cpu" and tensor.dtype in C_TYPES and library(C_TYPES[tensor.dtype]) is not None


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$NRAM_CACHE_DIR``, else ``~/.cache/nram``."""
    return Path(os.environ.get("NRAM_CACHE_DIR") or Path.home() / ".cache" / "nram")


def _cpu_signature() -> str:
    """What ``-march=native`` depends on, so a cache shared by different CPUs keeps one build each."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor()


def _compile(compiler: str, real: str) -> Path:
    """Build native_step.c for ``real`` ("float" or "double") unless a build is cached; its path."""
    source = SOURCE.read_bytes()
    error = ""
    for flags in _FLAG_SETS:
        command = [compiler, *flags, "-fPIC", "-shared", f"-DREAL={real}"]
        key = hashlib.sha256(b"\0".join([source, " ".join(command).encode(), platform.machine().encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        target = cache_dir() / f"nram_step_{real}_{key}.so"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            result = subprocess.run([*command, str(SOURCE), "-o", str(built), "-lm"], capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(built, target)  # atomic: processes compiling at once never see half a file
                return target
            error = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
    raise RuntimeError(f"{compiler} failed: {error}")


@functools.cache
def library(real: str) -> ctypes.CDLL | None:
    """The compiled step for ``real`` ("float" or "double"), or None (with one warning) if it cannot be built."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    try:
        if compiler is None:
            raise RuntimeError("no C compiler found (set CC)")
        lib = ctypes.CDLL(str(_compile(compiler, real)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"the native CPU step is unavailable ({error}); running the slower PyTorch step. "
                      "Set NRAM_NATIVE=0 to choose it and silence this warning.", RuntimeWarning, stacklevel=2)
        return None
    circuit = [ctypes.c_long] * 5 + [ctypes.c_void_p] * 2 + [ctypes.c_long] * 2
    lib.nram_step_forward.argtypes = circuit + [ctypes.c_void_p] * 6
    lib.nram_step_backward.argtypes = circuit + [ctypes.c_void_p] * 10
    softmax = [ctypes.c_long] * 3 + [ctypes.c_void_p] + [ctypes.c_long] * 2
    lib.nram_choice_softmax.argtypes = softmax + [ctypes.c_void_p] * 2
    lib.nram_choice_softmax_backward.argtypes = softmax + [ctypes.c_void_p] * 3
    for function in (lib.nram_step_forward, lib.nram_step_backward, lib.nram_choice_softmax,
                     lib.nram_choice_softmax_backward):
        function.restype = None
    lib.nram_tile.restype = ctypes.c_long
    lib.nram_infer_step.argtypes = circuit[:7] + [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_int,
                                                  ctypes.c_long, ctypes.c_long] + [ctypes.c_void_p] * 7
    lib.nram_infer_step.restype = ctypes.c_int
    lib.nram_infer_mlp.argtypes = circuit[:7] + [ctypes.c_void_p, ctypes.c_long, ctypes.c_long] + \
        [ctypes.c_void_p] * 4 + [ctypes.c_long] * 2 + [ctypes.c_void_p] * 2
    lib.nram_infer_mlp.restype = ctypes.c_int
    return lib


def _int_array(values: list[int] | tuple[int, ...]) -> ctypes.Array:
    return (ctypes.c_int * len(values))(*values)


@functools.lru_cache(maxsize=64)
def _layout_arrays(layout: CircuitLayout) -> tuple[ctypes.Array, ctypes.Array, ctypes.Array]:
    """The layout as C int arrays: gate codes (indices into GATE_NAMES), first slots, slot widths."""
    return (_int_array([GATE_NAMES.index(name) for name in layout.gates]), _int_array(layout.first_slot),
            _int_array(layout.slot_widths))


def _step_head(layout: CircuitLayout, memory_size: int, batch_size: int) -> tuple:
    """The leading arguments of the step functions."""
    gates, first_slot, _ = _layout_arrays(layout)
    return memory_size, batch_size, layout.num_registers, layout.num_gates, layout.num_slots, gates, first_slot


def _softmax_head(layout: CircuitLayout, batch_size: int) -> tuple:
    """The leading arguments of the choice softmax."""
    return layout.num_slots, layout.num_sources, batch_size, _layout_arrays(layout)[2]


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nram-native")


def _run(function, head: tuple, batch_size: int, tensors: list[Tensor | None]) -> None:
    """Call ``function(*head, begin, end, *pointers)`` over the whole batch, split into contiguous
    ranges across threads when it is large."""
    pointers = [None if t is None else t.data_ptr() for t in tensors]
    workers = min(torch.get_num_threads(), batch_size // (PARALLEL_MIN_BATCH // 2))
    if batch_size < PARALLEL_MIN_BATCH or workers < 2:
        function(*head, 0, batch_size, *pointers)
        return
    bounds = [batch_size * k // workers for k in range(workers + 1)]
    list(_pool(workers).map(lambda k: function(*head, bounds[k], bounds[k + 1], *pointers), range(workers)))


def _check_contiguous(*tensors: Tensor) -> None:
    if not all(t.is_contiguous() for t in tensors):
        raise ValueError("the native step reads raw memory: pass contiguous tensors")


def step_forward(memory: Tensor, registers: Tensor, weights: Tensor, layout: CircuitLayout
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """One soft timestep on contiguous tensors: ``(memory', mixed [S, M, B], sources [K, M, B])``,
    as :func:`nram.machine._run_gates` returns them (sources stacked). Without a WRITE gate
    ``memory'`` is ``memory`` itself."""
    _check_contiguous(memory, registers, weights)
    memory_size, batch_size = memory.shape[1], memory.shape[2]
    new_memory = torch.empty_like(memory) if "write" in layout.gates else None
    mixed = memory.new_empty(layout.num_slots, memory_size, batch_size)
    sources = memory.new_empty(layout.num_sources, memory_size, batch_size)
    _run(library(C_TYPES[memory.dtype]).nram_step_forward, _step_head(layout, memory_size, batch_size), batch_size,
         [memory, registers, weights, new_memory, mixed, sources])
    return (memory if new_memory is None else new_memory), mixed, sources


def step_backward(memory: Tensor, weights: Tensor, mixed: Tensor, sources: Tensor, grad_memory: Tensor,
                  grad_registers: Tensor, layout: CircuitLayout) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of :func:`step_forward` from what it saved and the gradients of
    ``(memory', registers')``: ``(grad memory, grad registers [R, M, B], grad weights [K, S, B])``."""
    _check_contiguous(memory, weights, mixed, sources)
    grad_memory, grad_registers = grad_memory.contiguous(), grad_registers.contiguous()
    memory_size, batch_size = memory.shape[1], memory.shape[2]
    grad_memory_in = torch.empty_like(memory)
    grad_sources = torch.empty_like(sources)
    grad_slots = torch.empty_like(mixed)
    grad_weights = torch.empty_like(weights)
    _run(library(C_TYPES[memory.dtype]).nram_step_backward, _step_head(layout, memory_size, batch_size),
         batch_size, [memory, weights, mixed, sources, grad_memory, grad_registers,
          grad_memory_in, grad_sources, grad_slots, grad_weights])
    return grad_memory_in, grad_sources[:layout.num_registers], grad_weights


def choice_softmax(logits: Tensor, layout: CircuitLayout) -> Tensor:
    """Every slot's softmax over its own options, from the controller's compact logits
    ``[L, B]`` (slot after slot, as :class:`nram.circuit.CircuitLayout` lays them out; rows
    after the last slot's are ignored) to weights ``[K, S, B]``, 0 on the options a slot lacks."""
    _check_contiguous(logits)
    batch_size = logits.shape[1]
    weights = logits.new_empty(layout.num_sources, layout.num_slots, batch_size)
    _run(library(C_TYPES[logits.dtype]).nram_choice_softmax, _softmax_head(layout, batch_size), batch_size,
         [logits, weights])
    return weights


def choice_softmax_backward(weights: Tensor, grad_weights: Tensor, num_rows: int, layout: CircuitLayout) -> Tensor:
    """The gradient of :func:`choice_softmax`'s logits ``[num_rows, B]`` (0 on rows that are no slot's)."""
    _check_contiguous(weights)
    grad_weights = grad_weights.contiguous()
    batch_size = weights.shape[2]
    grad_logits = weights.new_empty(num_rows, batch_size)
    grad_logits[sum(layout.slot_widths):].zero_()
    _run(library(C_TYPES[weights.dtype]).nram_choice_softmax_backward, _softmax_head(layout, batch_size),
         batch_size, [weights, grad_weights, grad_logits])
    return grad_logits


class TiledInference:
    """The soft machine's state during inference, stored tile by tile for :func:`nram_infer_step`.

    ``memory0`` holds integer cells ``[B, M]``; the machine starts with every register at 0.
    Each :meth:`step` takes the controller's logits ``[B, L]`` (example-major, as ``hidden @
    weight.T`` gives them, the bias apart) and returns the register flags ``[B, R]`` the
    controller reads next; :meth:`output` is ``sum_t p_t memory_t`` ``[B, M, M]``, as
    :meth:`nram.model.NRAM.output_memory` defines it. The C code runs each tile's softmax,
    gates and output update while the tile is in the cache, and splits the tiles across
    ``torch.get_num_threads()`` threads for large batches.
    """

    def __init__(self, memory0: Tensor, layout: CircuitLayout, dtype: torch.dtype):
        self.lib = library(C_TYPES[dtype])
        self.layout = layout
        self.batch_size, memory_size = memory0.shape
        tile = self.lib.nram_tile()
        self.num_tiles = -(-self.batch_size // tile)
        self.memory = one_hot_tiles(memory0, tile, dtype)
        self.registers = self.memory.new_zeros(self.num_tiles, layout.num_registers, memory_size, tile)
        self.registers[:, :, 0] = 1
        self.output_memory = self.memory.new_zeros(memory_size, memory_size, self.batch_size)
        self.survival = self.memory.new_ones(self.num_tiles * tile)
        gates, first_slot, widths = _layout_arrays(layout)
        self.head = (memory_size, self.batch_size, layout.num_registers, layout.num_gates, layout.num_slots,
                     gates, first_slot, widths)

    def step(self, logits: Tensor, bias: Tensor, last: bool) -> Tensor:
        """One timestep from the controller's logits ``logits + bias``: ``logits`` ``[B, L]``, or
        ``[1, L]`` for logits every example shares; ``bias`` ``[L]``. Returns the flags ``[B, R]``."""
        _check_contiguous(logits, bias)
        flags = logits.new_empty(self.batch_size, self.layout.num_registers)
        pointers = [t.data_ptr() for t in (logits, bias, self.memory, self.registers, self.output_memory,
                                           self.survival, flags)]
        stride = 0 if logits.shape[0] == 1 else logits.shape[1]
        head = self.head + (stride, self.layout.num_logits - 1, int(last))

        def run(first: int, end: int) -> None:
            if self.lib.nram_infer_step(*head, first, end, *pointers) != 0:
                raise MemoryError("nram_infer_step could not allocate its scratch memory")

        _run_tiles(run, self.batch_size, self.num_tiles)
        return flags

    def output(self) -> Tensor:
        """``sum_t p_t memory_t`` ``[B, M, M]`` (a view of value-major storage)."""
        return self.output_memory.permute(2, 0, 1)


def one_hot_tiles(cells: Tensor, tile: int, dtype: torch.dtype) -> Tensor:
    """Integer cells ``[B, M]`` one-hot, tile by tile: ``[ceil(B / tile), M, M, tile]``, with
    ``[t, k, v, l]`` = 1 where example ``t * tile + l`` holds v in cell k (zeros past B)."""
    batch_size, memory_size = cells.shape
    num_tiles = -(-batch_size // tile)
    tiles = torch.zeros(num_tiles, memory_size, memory_size, tile, dtype=dtype)
    example = torch.arange(batch_size).unsqueeze(1)
    cell = torch.arange(memory_size)
    index = (((example // tile) * memory_size + cell) * memory_size + cells.cpu()) * tile + example % tile
    tiles.view(-1)[index.view(-1)] = 1
    return tiles


class CellOutOfRange(ValueError):
    """:func:`infer_mlp` found a cell outside 0..M-1 (which torch's own check would have to find
    first, with threads that then keep spinning on the cores the C code needs)."""


def _run_tiles(run, batch_size: int, num_tiles: int) -> None:
    """``run(first, end)`` over tiles ``[0, num_tiles)``, split across threads for large batches."""
    workers = min(torch.get_num_threads(), batch_size // (PARALLEL_MIN_BATCH // 2))
    if batch_size < PARALLEL_MIN_BATCH or workers < 2:
        run(0, num_tiles)
        return
    bounds = [num_tiles * k // workers for k in range(workers + 1)]
    list(_pool(workers).map(lambda k: run(bounds[k], bounds[k + 1]), range(workers)))


def infer_mlp(cells: Tensor, steps: int, layout: CircuitLayout, layers: list[tuple[Tensor, Tensor]],
              first_logits: Tensor) -> Tensor:
    """``sum_t p_t memory_t`` ``[B, M, M]`` of a whole soft rollout from integer cells ``[B, M]``,
    controller included, in one C call (:func:`nram_infer_mlp`).

    ``layers``: the feed-forward controller's ``(weight [out, in], bias [out])``, hidden layers
    (each followed by ReLU) then the read-out; ``first_logits`` ``[L]``: its output for the
    first step's flags, which every example shares (all registers start at 0).
    """
    dtype = first_logits.dtype
    lib = library(C_TYPES[dtype])
    cells = cells.to(torch.long).contiguous()
    batch_size, memory_size = cells.shape
    layers = [(weight.detach().contiguous(), bias.detach().contiguous()) for weight, bias in layers]
    first_logits = first_logits.detach().contiguous()
    sizes = [layers[0][0].shape[1]] + [weight.shape[0] for weight, _ in layers]
    weights = (ctypes.c_void_p * len(layers))(*[weight.data_ptr() for weight, _ in layers])
    biases = (ctypes.c_void_p * len(layers))(*[bias.data_ptr() for _, bias in layers])
    output = first_logits.new_empty(memory_size, memory_size, batch_size)  # C zeroes it: torch's fill would
    # leave its worker threads spinning on the cores the C threads need
    gates, first_slot, widths = _layout_arrays(layout)
    head = (memory_size, batch_size, layout.num_registers, layout.num_gates, layout.num_slots, gates, first_slot,
            widths, steps, len(layers) - 1, (ctypes.c_long * len(sizes))(*sizes), weights, biases,
            first_logits.data_ptr())

    def run(first: int, end: int) -> None:
        status = lib.nram_infer_mlp(*head, first, end, cells.data_ptr(), output.data_ptr())
        if status == -2:
            raise CellOutOfRange(f"a memory cell holds a value outside 0..{memory_size - 1}")
        if status != 0:
            raise MemoryError("nram_infer_mlp could not allocate its scratch memory")

    _run_tiles(run, batch_size, -(-batch_size // lib.nram_tile()))
    return output.permute(2, 0, 1)
