"""Floating-point operations of the soft machine, counted from its circuit, and the peak rate
of the CPU it runs on: how far a benchmark is from the hardware (``scripts/bench_machine.py``).

A multiply or an add is one FLOP, a multiply-add two; an exponential, a comparison or a division
one. The count follows the C step that runs the machine on the CPU (``nram/native_step.c``):
LT, LE, MIN and MAX by running sums in O(M), ADD and SUB by direct sums in O(M^2), and a
constant source mixed in by one add per choice. (PyTorch's closed forms in :mod:`nram.gates`
take dense triangular products for the comparisons, 2M^2 to 6M^2 each, and an FFT for ADD and
SUB from ``FFT_MIN_SIZE`` on: more work for the same result, not counted.) The stop
distribution and the loss, O(M) per step, are left out. A training step counts three forwards
(the backward of a product costs a multiply-add for each of its two inputs), the usual
convention; inference adds the output's accumulation, ``sum_t p_t memory_t`` (2M^2 per step),
and runs the first step's controller once for the whole batch (every register starts at 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nram.circuit import CircuitLayout
from nram.gates import GATE_CONSTANTS, RESCALED_GATES

TRAINING_FACTOR = 3
"""A training step's FLOPs over the forward's: forward, then a backward of twice its cost."""

SOFTMAX_FLOPS = 5
"""Per option of a choice: the running maximum, the shift, the exponential, the sum, the scaling."""

GATE_FLOPS = {
    "read": lambda m: 2 * m * m,  # out[v] = sum_k address[k] memory[k, v]
    "zero": lambda m: 0,
    "one": lambda m: 0,
    "two": lambda m: 0,
    "inc": lambda m: 0,  # a shift
    "add": lambda m: 2 * m * m,  # out[c] = sum_x a[x] b[c - x]
    "sub": lambda m: 2 * m * m,
    "dec": lambda m: 0,
    "lt": lambda m: 3 * m + 1,  # the CDF of A by a running sum, its dot product with B, then 1 - p
    "le": lambda m: 3 * m + 1,
    "eq": lambda m: 2 * m + 1,  # a dot product, then 1 - p
    "min": lambda m: 4 * m,  # two running sums, their product, its difference
    "max": lambda m: 4 * m,
    "write": lambda m: 3 * m * m,  # memory + address (value - memory)
}
"""FLOPs of each gate on distributions over M values, for one example, as the C step computes them."""


def rescale_flops(memory_size: int) -> int:
    """FLOPs of dividing a gate's output by its total (:data:`nram.gates.RESCALED_GATES`): the
    total, its reciprocal, and a multiply per value."""
    return 2 * memory_size + 1


def machine_step_flops(layout: CircuitLayout, memory_size: int) -> int:
    """FLOPs of one timestep of the machine for one example, controller excluded: every choice's
    softmax, every choice's mixture (a multiply-add per value of each register or gate output
    it may take, one add for a constant), and every gate, with its rescaling where it has one."""
    softmax = SOFTMAX_FLOPS * sum(layout.slot_widths)
    mixing = 0
    for source in range(layout.num_sources):
        constant = source >= layout.num_registers and layout.gates[source - layout.num_registers] in GATE_CONSTANTS
        slots = sum(width > source for width in layout.slot_widths)
        mixing += slots * (1 if constant else 2 * memory_size)
    gates = sum(GATE_FLOPS[name](memory_size) for name in layout.gates)
    rescaling = sum(rescale_flops(memory_size) for name in layout.gates if name in RESCALED_GATES)
    return softmax + mixing + gates + rescaling


def controller_flops(controller: nn.Module) -> int:
    """FLOPs of one controller step for one example: a multiply-add per weight of every matrix
    (dense layers, LSTM cell, read-out, a table's columns); biases and activations left out."""
    return 2 * sum(parameter.numel() for parameter in controller.parameters() if parameter.dim() == 2)


def rollout_flops(model: nn.Module, memory_size: int, steps: int, training: bool = False) -> int:
    """FLOPs per example of a T-step rollout of ``model`` (an :class:`nram.model.NRAM`) at memory
    size M: for training, :data:`TRAINING_FACTOR` forwards; for inference, the forward with the
    output's accumulation and the first step's controller shared by the batch (module docstring)."""
    machine = steps * machine_step_flops(model.layout, memory_size)
    controller = controller_flops(model.controller)
    if training:
        return TRAINING_FACTOR * (machine + steps * controller)
    return machine + (steps - 1) * controller + steps * 2 * memory_size * memory_size


@dataclass(frozen=True)
class CpuPeak:
    """A CPU's peak floating-point rate per core: vector width x FMA x pipes x clock.

    ``vector_bits`` (the width of the vector units), ``fma`` and ``ghz`` are read from the
    operating system; ``pipes`` (vector units per core that issue an FMA each cycle) cannot be,
    and is 2, as on x86 cores since Haswell and Zen.
    """

    name: str
    vector_bits: int
    fma: bool
    ghz: float
    pipes: int = 2

    def flops_per_s(self, threads: int, dtype: torch.dtype = torch.float32) -> float:
        """Peak FLOP/s of ``threads`` cores in ``dtype``."""
        lanes = self.vector_bits // (torch.finfo(dtype).bits)
        return threads * lanes * (2 if self.fma else 1) * self.pipes * self.ghz * 1e9

    def describe(self) -> str:
        """One line: the CPU and how its peak per core is made up."""
        return (f"{self.name}: {self.vector_bits}-bit vectors, {'FMA' if self.fma else 'no FMA'}, "
                f"{self.pipes} pipes, {self.ghz:.2f} GHz")


def cpu_peak(cpuinfo: str | None = None, max_khz: str | None = None) -> CpuPeak | None:
    """This CPU's :class:`CpuPeak` from ``/proc/cpuinfo`` (and the cpufreq maximum where the kernel
    exposes one), or None where neither says (not Linux, or an unknown vector unit). The
    arguments replace the files' contents, for tests."""
    if cpuinfo is None:
        cpuinfo = _read("/proc/cpuinfo")
    if max_khz is None:
        max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if not cpuinfo:
        return None
    flags = set(_field(cpuinfo, "flags").split())
    if "avx512f" in flags:
        bits = 512
    elif "avx" in flags:
        bits = 256
    elif "sse2" in flags:
        bits = 128
    else:
        return None
    if bits > 128 and _is_zen1(cpuinfo):
        bits = 128  # Zen and Zen+ split each 256-bit operation over two 128-bit units
    if max_khz.strip().isdigit():
        ghz = int(max_khz) / 1e6
    else:
        mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, flags=re.MULTILINE)
        if not mhz:
            return None
        ghz = max(float(value) for value in mhz) / 1e3
    return CpuPeak(_field(cpuinfo, "model name") or "CPU", bits, "fma" in flags, ghz)


def _is_zen1(cpuinfo: str) -> bool:
    """AMD family 23 (0x17) below model 0x30: Zen and Zen+, whose vector units are 128 bits wide."""
    family, model = _field(cpuinfo, "cpu family"), _field(cpuinfo, "model")
    return (_field(cpuinfo, "vendor_id") == "AuthenticAMD" and family.isdigit() and int(family) == 23
            and model.isdigit() and int(model) < 0x30)


def _field(cpuinfo: str, name: str) -> str:
    match = re.search(rf"^{name}\s*:\s*(.*)$", cpuinfo, flags=re.MULTILINE)
    return match.group(1).strip() if match else ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
