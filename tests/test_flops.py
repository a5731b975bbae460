"""FLOP counts against PyTorch's own flop counter, and the CPU peak read from /proc/cpuinfo.

PyTorch's ``FlopCounterMode`` counts matrix products only (2 m n k each): the controller's
layers (with the blank row the machine adds to the read-out) and the triangular products of
LT, LE (one each), MIN and MAX (three each). The count's other terms are the closed forms
of the C step (nram/native_step.c), counted by hand below for a small circuit.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nram.flops import GATE_FLOPS, CpuPeak, controller_flops, cpu_peak, machine_step_flops, rollout_flops
from nram.model import NRAM, MachineConfig

MATRIX_PRODUCTS = {"lt": 1, "le": 1, "min": 3, "max": 3}
"""[M, M] x [M] products each gate takes."""


def blank_row_flops(model):
    """The read-out's extra zero row (the blank option the machine pads choices with)."""
    weight, _ = model.controller.readout_weight()
    return 2 * weight.shape[1]


@pytest.mark.parametrize("controller", ["mlp", "lstm", "table"])
@pytest.mark.parametrize("memory_size", [6, 13])
def test_matrix_products_match_pytorchs_flop_counter(controller, memory_size, monkeypatch):
    monkeypatch.setenv("NRAM_NATIVE", "0")
    torch.manual_seed(0)
    model = NRAM(MachineConfig(num_registers=3, controller=controller, hidden_size=24))
    batch, steps = 5, 4
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randint(0, memory_size, (batch, memory_size)), steps)
    gates = sum(2 * memory_size ** 2 * MATRIX_PRODUCTS.get(name, 0) for name in model.layout.gates)
    expected = batch * steps * (controller_flops(model.controller) + blank_row_flops(model) + gates)
    assert counter.get_total_flops() == expected


def test_a_step_counts_every_choice_every_gate_and_the_controller_by_hand():
    model = NRAM(MachineConfig(num_registers=2, gates=("read", "inc", "write"), hidden_size=8))
    layout = model.layout  # slots: read (2 options), inc (3), write (4, 4), registers (5, 5)
    assert layout.slot_widths == (2, 3, 4, 4, 5, 5)
    m = 10
    softmax = 5 * 23
    # sources r0, r1 in all 6 slots, read's output in 5, inc's in 4 (2M each); write's constant 0 in 2 (1 each)
    mixing = (6 + 6 + 5 + 4) * 2 * m + 2 * 1
    gates = 2 * m * m + 0 + 3 * m * m + (2 * m + 1)  # READ's output is rescaled: its total, 1 / it, M products
    assert machine_step_flops(layout, m) == softmax + mixing + gates
    controller = 2 * (2 * 8 + 8 * 8 + 8 * (23 + 1))
    assert controller_flops(model.controller) == controller
    assert rollout_flops(model, m, 4, training=True) == 3 * 4 * (softmax + mixing + gates + controller)
    # inference: the first step's controller is shared by the batch; the output sums p_t memory_t
    assert rollout_flops(model, m, 4) == 4 * (softmax + mixing + gates) + 3 * controller + 4 * 2 * m * m


def test_comparisons_are_running_sums_and_arithmetic_direct_sums():
    assert [GATE_FLOPS[name](10) for name in ("lt", "le", "eq", "min", "max", "add", "sub")] == \
        [31, 31, 21, 40, 40, 200, 200]


CPUINFO = """processor\t: 0
model name\t: Test CPU 9000
cpu MHz\t\t: 1996.251
flags\t\t: fpu sse2 avx fma avx2
processor\t: 1
model name\t: Test CPU 9000
cpu MHz\t\t: 2400.000
flags\t\t: fpu sse2 avx fma avx2
"""


def test_the_cpu_peak_is_vector_lanes_times_fma_times_pipes_times_clock():
    peak = cpu_peak(CPUINFO, max_khz="")
    assert peak == CpuPeak("Test CPU 9000", 256, True, 2.4)
    assert peak.flops_per_s(2) == pytest.approx(2 * 8 * 2 * 2 * 2.4e9)
    assert peak.flops_per_s(1, torch.float64) == pytest.approx(4 * 2 * 2 * 2.4e9)
    assert cpu_peak(CPUINFO.replace(" avx fma avx2", " avx512f avx fma"), max_khz="3500000\n").flops_per_s(1) \
        == pytest.approx(16 * 2 * 2 * 3.5e9)
    assert cpu_peak(CPUINFO.replace(" fma", ""), max_khz="").fma is False
    assert cpu_peak("", max_khz="") is None
    assert cpu_peak(CPUINFO, max_khz="<unknown>\n").ghz == 2.4  # a malformed cpufreq falls back to cpu MHz
    zen1 = CPUINFO.replace("model name", "vendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 1\nmodel name")
    assert cpu_peak(zen1, max_khz="").vector_bits == 128  # 256-bit instructions on 128-bit units
    assert cpu_peak(zen1.replace("model\t\t: 1\n", "model\t\t: 49\n"), max_khz="").vector_bits == 256  # Zen 2
    assert cpu_peak(CPUINFO.replace("sse2 avx fma avx2", "neon"), max_khz="") is None
