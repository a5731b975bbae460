"""Floating-point operations of the soft machine, counted from its circuit, and the peak rate
of the CPU it runs on: how far a benchmark is from the hardware (``scripts/bench_machine.py``).

A multiply or an add is one FLOP, a multiply-add two; an exponential or a division one. The
gates count as :mod:`nram.gates` computes them: the closed forms below ``FFT_MIN_SIZE`` (a
gather and a sum for ADD and SUB, dense triangular products for the comparisons, MIN and
MAX) and three real FFTs above it. The stop distribution and the loss, O(M) per step, are
left out. A training step counts three forwards (the backward of a product costs a
multiply-add for each of its two inputs), the usual convention.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nram.circuit import CircuitLayout
from nram.gates import FFT_MIN_SIZE

TRAINING_FACTOR = 3
"""A training step's FLOPs over the forward's: forward, then a backward of twice its cost."""


def _convolution_flops(m: int) -> int:
    """ADD or SUB: a gather and a multiply-add per pair of values, or three real FFTs of size M
    (2.5 M log2 M each) and a complex product per frequency."""
    if m < FFT_MIN_SIZE:
        return 2 * m * m
    return round(3 * 2.5 * m * math.log2(m)) + 6 * (m // 2 + 1)


GATE_FLOPS = {
    "read": lambda m: 2 * m * m,  # address^T memory
    "zero": lambda m: 0,
    "one": lambda m: 0,
    "two": lambda m: 0,
    "inc": lambda m: 0,  # a roll
    "add": _convolution_flops,
    "sub": _convolution_flops,
    "dec": lambda m: 0,
    "lt": lambda m: 2 * m * m + 4 * m,  # the CDF by a triangular product, a dot product, the 0/1 output
    "le": lambda m: 2 * m * m + 4 * m,
    "eq": lambda m: 4 * m,  # a dot product, the 0/1 output
    "min": lambda m: 6 * m * m + m,  # two survival functions, their product, then differences
    "max": lambda m: 6 * m * m + m,
    "write": lambda m: 3 * m * m,  # memory + address (value - memory)
}
"""FLOPs of each gate on distributions over M values, for one example."""


def machine_step_flops(layout: CircuitLayout, memory_size: int) -> int:
    """FLOPs of one timestep of the machine for one example, controller excluded: every choice's
    softmax (exp, sum, divide per option) and mixture over its options' M values, and every gate."""
    widths = layout.slot_widths
    softmax = 3 * sum(widths)
    mixing = sum(2 * width * memory_size for width in widths)
    return softmax + mixing + sum(GATE_FLOPS[name](memory_size) for name in layout.gates)


def controller_flops(controller: nn.Module) -> int:
    """FLOPs of one controller step for one example: a multiply-add per weight of every matrix
    (dense layers, LSTM cell, read-out, a table's columns); biases and activations left out."""
    return 2 * sum(parameter.numel() for parameter in controller.parameters() if parameter.dim() == 2)


def rollout_flops(model: nn.Module, memory_size: int, steps: int, training: bool = False) -> int:
    """FLOPs per example of a T-step rollout of ``model`` (an :class:`nram.model.NRAM`) at memory
    size M, times :data:`TRAINING_FACTOR` for a training step."""
    forward = steps * (machine_step_flops(model.layout, memory_size) + controller_flops(model.controller))
    return forward * (TRAINING_FACTOR if training else 1)


@dataclass(frozen=True)
class CpuPeak:
    """A CPU's peak floating-point rate per core: vector width x FMA x pipes x clock.

    ``vector_bits``, ``fma`` and ``ghz`` are read from the operating system; ``pipes`` (vector
    units per core that issue an FMA each cycle) cannot be, and is 2, as on x86 cores since
    Haswell and Zen 2.
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
    if max_khz.strip():
        ghz = int(max_khz) / 1e6
    else:
        mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, flags=re.MULTILINE)
        if not mhz:
            return None
        ghz = max(float(value) for value in mhz) / 1e3
    return CpuPeak(_field(cpuinfo, "model name") or "CPU", bits, "fma" in flags, ghz)


def _field(cpuinfo: str, name: str) -> str:
    match = re.search(rf"^{name}\s*:\s*(.*)$", cpuinfo, flags=re.MULTILINE)
    return match.group(1).strip() if match else ""


def _read(path: str) -> str:
    file = Path(path)
    return file.read_text() if os.access(file, os.R_OK) else ""
