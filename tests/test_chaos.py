"""Edge-of-chaos diagnostics: order parameters, mean field, replicas, Lyapunov, weight decay, plot."""

import math
from typing import NamedTuple

import numpy as np
import pytest
import torch

from conftest import requires_cuda
from training.diagnostics import (j2_slope, log_order_parameters, lyapunov_exponent, mean_field_fixed_point,
                                  mean_field_lhs, order_parameters, phase, plot_phase_diagram,
                                  recommended_weight_decay, replica_separation)


@pytest.fixture(autouse=True)
def single_thread():
    """These loops run many small matmuls: on a loaded machine, intra-op threads waiting for each
    other make them 10-20x slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_order_parameters_match_definition():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(50, 30), torch.nn.Tanh(), torch.nn.Linear(30, 4))
    with torch.no_grad():  # entries with mean exactly 1.0 / 50 and std exactly 1.3 / sqrt(50)
        w = torch.randn(30, 50, dtype=torch.float64)
        w = (w - w.mean()) / w.std(correction=0)
        model[0].weight.copy_(w * 1.3 / math.sqrt(50) + 1.0 / 50)
    params = order_parameters(model)
    assert set(params) == {"0.weight", "2.weight"}
    assert params["0.weight"] == pytest.approx((1.3, 1.0), abs=1e-5)
    w2 = model[2].weight.detach().double()
    expected = (w2.std(correction=0).item() * math.sqrt(30), w2.mean().item() * 30)
    assert params["2.weight"] == pytest.approx(expected, rel=1e-12)

    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[tag, step] = value

    writer = Writer()
    assert log_order_parameters(writer, model, step=3) == params
    assert writer.scalars == {(f"chaos/{kind}/{name}", 3): params[name][i]
                              for name in params for i, kind in enumerate(("J", "J0"))}


def test_mean_field_lhs_edge_ordered_chaotic():
    assert abs(mean_field_lhs(1.0, 0.0) - 1.0) < 1e-3
    assert mean_field_lhs(0.5, 0.0) == pytest.approx(0.25, abs=1e-9)
    assert phase(0.5) == "ordered" and phase(1.0) == "edge" and phase(1.5) == "chaotic"
    assert phase(0.5, 1.5) == "ordered"  # ferromagnetic: u != 0 saturates the units
    u, q = mean_field_fixed_point(0.5, 1.5)
    assert u > 0.5 and q > 0.5


def _brute_force_lhs(J: float, J0: float) -> float:
    """The same fixed point with a fine trapezoid rule on z in [-12, 12] (float64)."""
    z = np.linspace(-12, 12, 4001)  # the trapezoid rule is spectrally accurate here
    w = np.exp(-z * z / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    u, q = 1.0, 1.0
    for _ in range(1000):
        t = np.tanh(J0 * u + J * math.sqrt(q) * z)
        u, q = float(w @ t), float(w @ (t * t))
    sech2 = 1 - np.tanh(J0 * u + J * math.sqrt(q) * z) ** 2
    return J * J * float(w @ sech2 ** 2)


@pytest.mark.parametrize("J, J0", [(1.5, 0.0), (0.8, 1.6), (1.3, 0.7), (2.5, -0.5)])
def test_gauss_hermite_matches_brute_force_integral(J, J0):
    assert mean_field_lhs(J, J0) == pytest.approx(_brute_force_lhs(J, J0), abs=1e-5)


def test_replica_separation_ordered_and_chaotic():
    generator = torch.Generator().manual_seed(0)
    assert replica_separation(0.5, N=2000, steps=500, generator=generator) < 1e-4
    assert replica_separation(1.5, N=2000, steps=500, generator=generator) > 1e-2


class _Pair(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


@pytest.mark.parametrize("factor", [0.5, -2.0, 3.0])
def test_lyapunov_of_linear_map_is_log_abs_factor(factor):
    state = (_Pair(torch.zeros(3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)), None)

    def step(s):
        pair, nothing = s
        assert isinstance(pair, _Pair) and nothing is None  # the structure survives
        return _Pair(factor * pair.a, factor * pair.b), None

    estimate = lyapunov_exponent(step, state, steps=40, generator=torch.Generator().manual_seed(1))
    assert estimate == pytest.approx(math.log(abs(factor)), abs=1e-9)


def test_lyapunov_of_tanh_network_sign_follows_phase():
    generator = torch.Generator().manual_seed(2)
    n = 300
    exponents = {}
    for J in (0.5, 1.5):
        weight = torch.randn(n, n, generator=generator, dtype=torch.float64) * J / math.sqrt(n)
        x0 = torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1
        exponents[J] = lyapunov_exponent(lambda x: torch.tanh(x @ weight), x0, steps=150, eps=1e-8,
                                         generator=generator, warmup=50)
    assert exponents[0.5] < -0.3 and exponents[1.5] > 0.05


def test_lyapunov_merged_replicas_give_minus_infinity():
    assert lyapunov_exponent(lambda x: torch.zeros_like(x), torch.ones(4), steps=5) == -math.inf


def test_weight_decay_guideline_reproduces_paper_numbers():
    c, S, lr, momentum = 11.1, 60000, 0.02, 0.5
    growth = c * lr / ((1 - momentum) * S)  # Delta J^2 per step
    decay = recommended_weight_decay(growth, lr, momentum)
    assert decay["k=4"] == pytest.approx(c / (4 * S)) and decay["k=2"] == pytest.approx(c / (2 * S))
    assert decay["k=2"] == pytest.approx(9e-5, rel=0.05)
    trajectory = np.sqrt(0.25 + growth * np.arange(0, 1000, 10))
    assert j2_slope(trajectory, step_interval=10) == pytest.approx(growth, rel=1e-9)


def test_plot_phase_diagram_writes_png(tmp_path):
    records = []
    for i, lr in enumerate((0.01, 0.1)):
        for j, decay in enumerate((0.0, 1e-4, 1e-3)):
            final = 0.6 + 0.5 * i - 0.2 * j + 0.1
            records.append({"lr": lr, "weight_decay": decay, "final_loss": 1.0 / (1 + i + j),
                            "J_trajectory": list(np.linspace(0.5, final, 20))})
    path = plot_phase_diagram(records, tmp_path / "sub" / "phase.png", title="test sweep")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10000


@requires_cuda
def test_cuda_diagnostics():
    generator = torch.Generator(device="cuda").manual_seed(0)
    assert replica_separation(0.5, N=500, steps=100, generator=generator) < 1e-4
    state = torch.zeros(4, dtype=torch.float64, device="cuda")
    assert lyapunov_exponent(lambda x: 3 * x, state, steps=10, generator=generator) == pytest.approx(math.log(3))
    layer = torch.nn.Linear(20, 10).cuda()
    cpu_params = order_parameters(layer.cpu())
    gpu_params = order_parameters(layer.cuda())
    for name, values in cpu_params.items():
        assert gpu_params[name] == pytest.approx(values)
