"""Every gate against brute-force enumeration of its integer function, in float64."""

import itertools

import pytest
import torch
from conftest import random_distributions

from nram import gates as G

INTEGER_FUNCTIONS = {
    "zero": lambda a, b, m: 0,
    "one": lambda a, b, m: 1 % m,
    "two": lambda a, b, m: 2 % m,
    "inc": lambda a, b, m: (a + 1) % m,
    "add": lambda a, b, m: (a + b) % m,
    "sub": lambda a, b, m: (a - b) % m,
    "dec": lambda a, b, m: (a - 1) % m,
    "lt": lambda a, b, m: int(a < b),
    "le": lambda a, b, m: int(a <= b),
    "eq": lambda a, b, m: int(a == b),
    "min": lambda a, b, m: min(a, b),
    "max": lambda a, b, m: max(a, b),
}
ARITHMETIC = [name for name in G.GATE_NAMES if name not in ("read", "write")]


def brute_force(name, a, b):
    """P(m(A, B) = c) = sum_{x, y} A[x] B[y] [m(x, y) = c], one example at a time."""
    batch, size = a.shape
    out = torch.zeros_like(a)
    for k in range(batch):
        for x, y in itertools.product(range(size), range(size)):
            out[k, INTEGER_FUNCTIONS[name](x, y, size)] += a[k, x] * b[k, y]
    return out


@pytest.mark.parametrize("name", ARITHMETIC)
@pytest.mark.parametrize("size", [2, 3, 5, 8, 17, 32])
def test_gate_equals_brute_force_enumeration(name, size):
    gen = torch.Generator().manual_seed(size)
    a, b = random_distributions(2, 3, size, generator=gen)
    assert torch.allclose(G.apply_gate(name, a, b), brute_force(name, a, b), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["add", "sub"])
def test_fft_path_of_add_and_sub_matches_enumeration(name):
    size = G.FFT_MIN_SIZE
    gen = torch.Generator().manual_seed(1)
    a, b = random_distributions(2, 1, size, generator=gen)
    out = G.apply_gate(name, a, b)
    assert torch.allclose(out, brute_force(name, a, b), rtol=0, atol=1e-12)
    assert (out >= 0).all()


def test_read_and_write_match_their_formulas():
    gen = torch.Generator().manual_seed(0)
    memory = random_distributions(3, 6, 6, generator=gen)
    address, value = random_distributions(2, 3, 6, generator=gen)
    expected_read = sum(address[:, i, None] * memory[:, i] for i in range(6))
    assert torch.allclose(G.read(memory, address), expected_read, rtol=0, atol=1e-14)
    written = G.write(memory, address, value)
    for i in range(6):
        expected = (1 - address[:, i, None]) * memory[:, i] + address[:, i, None] * value
        assert torch.allclose(written[:, i], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ARITHMETIC)
@pytest.mark.parametrize("size", [24, G.FFT_MIN_SIZE + 16])
def test_gates_output_distributions_in_float32(name, size):
    gen = torch.Generator().manual_seed(3)
    a, b = random_distributions(2, 64, size, generator=gen, dtype=torch.float32)
    out = G.apply_gate(name, a, b)
    assert (out >= 0).all()
    assert torch.allclose(out.sum(-1), torch.ones(64), atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ARITHMETIC if G.GATE_ARITY[n] > 0])
def test_gradcheck_every_gate(name):
    gen = torch.Generator().manual_seed(4)
    a, b = random_distributions(2, 2, 7, generator=gen)
    inputs = (a.requires_grad_(), b.requires_grad_()) if G.GATE_ARITY[name] == 2 else (a.requires_grad_(),)
    assert torch.autograd.gradcheck(lambda *x: G.apply_gate(name, *x), inputs)


def test_gradcheck_read_and_write():
    gen = torch.Generator().manual_seed(5)
    memory = random_distributions(2, 5, 5, generator=gen).requires_grad_()
    address, value = (x.requires_grad_() for x in random_distributions(2, 2, 5, generator=gen))
    assert torch.autograd.gradcheck(G.read, (memory, address))
    assert torch.autograd.gradcheck(G.write, (memory, address, value))


@pytest.mark.parametrize("name", list(G.GATE_GRADIENTS))
@pytest.mark.parametrize("size", [6, G.FFT_MIN_SIZE])
def test_hand_written_gate_gradients_match_autograd(name, size):
    gen = torch.Generator().manual_seed(6)
    a, b = (x.T.requires_grad_() for x in random_distributions(2, 3, size, generator=gen))  # value-major
    grad_out = torch.randn(size, 3, generator=gen, dtype=torch.float64)
    unary = G.GATE_ARITY[name] == 1
    out = G.GATE_FUNCTIONS[name](a, None if unary else b)
    expected = torch.autograd.grad(out, (a,) if unary else (a, b), grad_out)
    got = G.GATE_GRADIENTS[name](a.detach(), None if unary else b.detach(), grad_out)
    for want, have in zip(expected, got):
        assert torch.allclose(have, want, rtol=0, atol=1e-12)


def test_constants_need_a_shape_and_ignore_inputs():
    out = G.apply_gate("two", batch_size=2, memory_size=5)
    assert out.tolist() == [[0, 0, 1, 0, 0]] * 2
    a = torch.full((1, 2), 0.5, dtype=torch.float64)
    assert G.apply_gate("two", a).tolist() == [[1.0, 0.0]]  # 2 mod 2 = 0
    with pytest.raises(ValueError, match="needs an input or batch_size"):
        G.apply_gate("one")


@pytest.mark.parametrize("call, message", [
    (lambda: G.apply_gate("mul", torch.ones(1, 3) / 3), "unknown gate 'mul'"),
    (lambda: G.apply_gate("add", torch.ones(3) / 3, torch.ones(3) / 3), r"must be \[batch, M\]"),
    (lambda: G.apply_gate("inc", torch.ones(2, 1)), "M must be >= 2"),
    (lambda: G.apply_gate("add", torch.ones(1, 3) / 3), "takes 2 input"),
    (lambda: G.apply_gate("add", torch.ones(1, 3) / 3, torch.ones(1, 4) / 4), "shapes"),
    (lambda: G.apply_gate("read", torch.ones(1, 3) / 3), "call nram.gates.read"),
])
def test_bad_gate_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
