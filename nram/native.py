"""The machine step in C, for the CPU: compiled on first use, called through ctypes.

At the batch sizes NRAM runs at, the PyTorch step (:mod:`nram.machine`) is a few hundred small
tensor operations per timestep, and their per-call overhead costs more than their arithmetic.
``native_step.c`` runs the whole step, forward or backward, in one call per timestep, with the
same formulas in the same order. It needs no new dependency: the first time a process asks for
it, the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) builds it into a cache
directory (``$NRAM_CACHE_DIR``, else ``~/.cache/nram``) in about a second, once per float type
and CPU, keeping the newest few builds. Where no compiler works the machine warns once and
runs the PyTorch step.

By default the C code runs for training and inference alike (training 1.6-2.3x faster than
the PyTorch step, docs/speed.md). ``NRAM_NATIVE=infer`` keeps it to where no gradient is needed
(evaluation, ``nram eval``) and trains with the PyTorch step; ``NRAM_NATIVE=0`` turns it off.
Each C step agrees with the PyTorch one to float rounding (about 1e-7 in float32, 1e-15 in
float64). Training is chaotic, so a run with either step takes its own path, but they succeed
about as often: on Swap and Reverse, 20 seeds each, the PyTorch step solved 19 of 40 and the C
step 15 (docs/seeds.md).

For a plain MLP controller a training rollout runs whole in C, forward and backward, in one
call (:mod:`nram.native_training`).

Shapes are value-major, as in :mod:`nram.machine`: memory ``[M, M, B]``, registers ``[R, M, B]``,
weights ``[K, S, B]`` (K = R + Q sources, S choice slots). Inference, which keeps the batch
tile by tile, has its own entries in the same C file (:mod:`nram.native_inference`).
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
KEEP_BUILDS = 4
"""Cached builds kept per float type (see :func:`prune_builds`)."""

_FLAG_SETS = (("-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno"),
              ("-O3", "-march=native", "-fno-math-errno"), ("-O3", "-fno-math-errno"))
"""Compiler flags, the later sets for compilers without the earlier ones. ``-fno-math-errno`` (no
value changes: errno is never read) lets square roots vectorise, as in the Adam update. GCC
vectorises at 256 bits on CPUs with AVX-512 unless told otherwise; at 512 the per-example loops
(each lane its own example, so no sum changes order) run twice as wide."""


MODES = ("1", "infer", "0")
"""The values of ``NRAM_NATIVE``: the C code everywhere (the default), only where no gradient is
needed, nowhere."""


def mode() -> str:
    """``NRAM_NATIVE`` (default "1"); ValueError naming the choices for any value not in :data:`MODES`."""
    value = os.environ.get("NRAM_NATIVE", "1")
    if value not in MODES:
        raise ValueError(f"NRAM_NATIVE must be one of {', '.join(MODES)}, got {value!r}")
    return value


def usable(tensor: Tensor, training: bool = False) -> bool:
    """Whether the C code runs on ``tensor`` (compiling it if needed): a CPU float32/float64
    tensor, unless ``NRAM_NATIVE=0``, or ``NRAM_NATIVE=infer`` where gradients are needed
    (``training``)."""
    switch = mode()
    if switch == "0" or (training and switch == "infer"):
        return False
    return tensor.device.type == "cpu" and tensor.dtype in C_TYPES and library(C_TYPES[tensor.dtype]) is not None


COMPILE_TIMEOUT_S = 120
"""A compiler that has not finished by then is given up on (nram then runs the PyTorch step)."""


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$NRAM_CACHE_DIR``, else ``~/.cache/nram``."""
    return Path(os.environ.get("NRAM_CACHE_DIR") or Path.home() / ".cache" / "nram")


def private_cache_dir() -> Path:
    """:func:`cache_dir`, created with mode 0700 if missing; RuntimeError unless it is a directory
    this user owns that no one else can write, since the code loaded from it runs in this process."""
    directory = cache_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise RuntimeError(f"the cache directory {directory} is not private to this user (owner uid "
                           f"{info.st_uid}, mode {oct(info.st_mode & 0o777)}); nram loads no code from it. "
                           f"Set NRAM_CACHE_DIR to a directory only you can write")
    return directory


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trusted(build: Path) -> bool:
    """Whether ``build`` is one this user compiled, whole: owned by this user, writable by no one
    else, and matching the SHA-256 recorded beside it when it was built."""
    record = build.with_suffix(".sha256")
    try:
        info = build.stat()
        return (info.st_uid == os.getuid() and not info.st_mode & 0o022
                and record.read_text().strip() == _digest(build))
    except OSError:
        return False


def _cpu_signature() -> str:
    """What ``-march=native`` depends on, so a cache shared by different CPUs keeps one build each."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor()


def prune_builds(real: str, keep: int = KEEP_BUILDS) -> None:
    """Delete all but the ``keep`` newest cached builds for ``real``: every edit of the C source
    or change of compiler leaves one behind. A process that has one loaded keeps its mapping."""
    builds = []
    for path in private_cache_dir().glob(f"nram_step_{real}_*.so"):
        try:
            builds.append((path.stat().st_mtime, path))
        except FileNotFoundError:  # another process pruned it first
            continue
    for _, stale in sorted(builds, reverse=True)[keep:]:
        stale.unlink(missing_ok=True)
        stale.with_suffix(".sha256").unlink(missing_ok=True)


def _compile(compiler: str, real: str) -> Path:
    """Build native_step.c for ``real`` ("float" or "double") unless a build is cached; its path."""
    source = SOURCE.read_bytes()
    builds = []
    for flags in _FLAG_SETS:
        command = [compiler, *flags, "-fPIC", "-shared", f"-DREAL={real}"]
        key = hashlib.sha256(b"\0".join([source, " ".join(command).encode(), platform.machine().encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        builds.append((command, private_cache_dir() / f"nram_step_{real}_{key}.so"))
    for _, target in builds:  # a compiler that refuses the first flags built from later ones: no retry
        if _trusted(target):
            return target
    error = ""
    for command, target in builds:
        if target.exists() and target.with_suffix(".sha256").exists():  # no record: an older nram's build
            warnings.warn(f"the cached build {target} is damaged or was not built by nram for this user; "
                          f"rebuilding it", RuntimeWarning, stacklevel=3)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            result = subprocess.run([*command, str(SOURCE), "-o", str(built), "-lm"], capture_output=True, text=True,
                                    timeout=COMPILE_TIMEOUT_S)
            if result.returncode == 0:
                record = Path(scratch) / "digest"
                record.write_text(_digest(built))
                os.replace(built, target)  # atomic: processes compiling at once never see half a file
                os.replace(record, target.with_suffix(".sha256"))
                prune_builds(real)
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
    scalar = ctypes.c_float if real == "float" else ctypes.c_double
    lib.nram_train_mlp.argtypes = circuit[:7] + [ctypes.c_void_p, ctypes.c_long, ctypes.c_long] + \
        [ctypes.c_void_p] * 5 + [scalar, scalar] + [ctypes.c_void_p] * 5
    lib.nram_train_mlp.restype = ctypes.c_int
    lib.nram_adam.argtypes = [ctypes.c_long] + [ctypes.c_void_p] * 6 + [ctypes.c_double] * 5 + [ctypes.c_int]
    lib.nram_adam.restype = None
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


def run_split(run, batch_size: int, units: int) -> None:
    """``run(first, end)`` over ``[0, units)`` (examples or tiles of a batch of ``batch_size``),
    split into contiguous ranges across ``torch.get_num_threads()`` threads when the batch is
    large (ctypes releases the GIL)."""
    workers = min(torch.get_num_threads(), batch_size // (PARALLEL_MIN_BATCH // 2))
    if batch_size < PARALLEL_MIN_BATCH or workers < 2:
        run(0, units)
        return
    bounds = [units * k // workers for k in range(workers + 1)]
    list(_pool(workers).map(lambda k: run(bounds[k], bounds[k + 1]), range(workers)))


def _run(function, head: tuple, batch_size: int, tensors: list[Tensor | None]) -> None:
    """Call ``function(*head, begin, end, *pointers)`` over the whole batch (see :func:`run_split`)."""
    pointers = [None if t is None else t.data_ptr() for t in tensors]
    run_split(lambda begin, end: function(*head, begin, end, *pointers), batch_size, batch_size)


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
