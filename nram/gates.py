"""The 14 NRAM gates, lifted exactly to distributions over {0..M-1}.

An integer function ``m`` of the gate's inputs is lifted as ``P(m(A, B) = c) = sum_{a,b}
A[a] B[b] [m(a, b) = c]``, computed here in closed form instead of through an ``[M, M, M]``
table:

- ADD / SUB: circular convolution / correlation (O(M^2), or O(M log M) by FFT for large M);
- INC / DEC: a roll of the distribution;
- LT / LE: ``P(A < B) = sum_b B[b] P(A < b)``, with the CDF of A as a product with a constant
  triangular matrix;
- EQ: a dot product;
- MIN / MAX: products of survival / cumulative distribution functions, the same way.

Layout. The public functions (:func:`apply_gate`, :func:`read`, :func:`write`) take and
return the usual batch-first shapes: values ``[B, M]``, memory ``[B, M, M]`` with
``memory[b, i, j] = P(cell i holds j)``. The closed forms underneath (:data:`GATE_FUNCTIONS`,
:data:`GATE_GRADIENTS`, :func:`read_values`, :func:`write_values`) work *value-major*: values
``[M, B]``, memory ``[M, M, B]``. With the batch innermost every operation is one vectorised
pass along contiguous memory, and a value ``[M, B]`` broadcasts against a memory or a stack of
values without any reshaping; the machine runs in this layout throughout.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

GATE_NAMES: tuple[str, ...] = (
    "read", "zero", "one", "two", "inc", "add", "sub", "dec",
    "lt", "le", "eq", "min", "max", "write",
)

GATE_ARITY: dict[str, int] = {
    "read": 1, "zero": 0, "one": 0, "two": 0, "inc": 1, "add": 2, "sub": 2, "dec": 1,
    "lt": 2, "le": 2, "eq": 2, "min": 2, "max": 2, "write": 2,
}
"""Number of inputs each gate reads (write: address, value)."""

RESCALED_GATES: frozenset[str] = frozenset({"read", "add", "sub", "min", "max"})
"""Gates whose output's total probability is a product of totals: ADD, SUB, MIN and MAX give
the product of their inputs' totals, READ the address's total times an average of the memory
rows' totals. The machine divides these outputs by their total (:mod:`nram.machine`); the gate
functions here stay the paper's. In exact arithmetic every total is 1. In float32 each gate's
rounding leaves it off by about 1e-7, and products compound that: a circuit that feeds such
gates into each other through its registers can grow the error tenfold per timestep until it
overflows to NaN (docs/harder.md, Permutation seed 1). The other gates' totals are their
input's (INC, DEC) or exactly 1 (LT, LE, EQ: ``[1 - p, p]``), and WRITE and every choice's
mixture are convex combinations, so none of them can compound it. The paper lists re-normalising
distributions among its training tricks (section 6.1) without saying which; these are the ones
where rounding compounds."""

FFT_MIN_SIZE = 128
"""From this many values on, ADD and SUB use the FFT (O(M log M)) instead of a gather (O(M^2)).

The FFT is faster from M = 32 on (17x at M = 32, batch 4096), but its float32 rounding puts
about 1e-8 of mass on values whose probability is exactly 0, and trained machines can be
that sensitive: one learned Reverse program went from 31% to 100% soft error at M = 33. So
it is kept for memories too large for the O(M^2) gather."""

GATE_CONSTANTS: dict[str, int] = {"zero": 0, "one": 1, "two": 2, "write": 0}
"""The value each constant gate outputs (mod M); WRITE's own output is the constant 0."""


def check_gate_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`GATE_NAMES`."""
    if name not in GATE_ARITY:
        raise ValueError(f"unknown gate {name!r}; valid gates are {', '.join(GATE_NAMES)}")


def one_hot_value(value: int, batch_size: int, memory_size: int, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Tensor:
    """The distribution that puts all mass on ``value mod M``: ``[batch_size, memory_size]``."""
    out = torch.zeros(batch_size, memory_size, dtype=dtype, device=device)
    out[:, value % memory_size] = 1.0
    return out


class GateConstants(NamedTuple):
    """Constant matrices and indices that turn every gate into a few batched operations.

    With ``x`` an input value and ``c`` an output value (all ``[M, M]`` unless noted):
    ``below[c, x] = [x < c]`` (so ``below @ a`` is ``P(A < c)``), ``at_most[c, x] = [x <= c]``
    (the CDF), ``at_least[c, x] = [x >= c]`` (the survival function); ``min_step`` and
    ``max_step`` take ``U(c) - U(c + 1)`` and ``V(c) - V(c - 1)``; ``sum_index`` and
    ``difference_index`` (``[M * M]``) gather ``b[(c - x) mod M]`` and ``b[(c + x) mod M]``;
    ``bit_base`` and ``bit_step`` (``[M, 1]``) build ``[1 - p, p, 0, ...]`` and ``bit_row``
    (``[M]``) reads ``d loss / d p`` off such an output's gradient. The ``_t`` fields are
    transposes, stored so the hot path never transposes.
    """

    below: Tensor
    below_t: Tensor
    at_most: Tensor
    at_most_t: Tensor
    at_least: Tensor
    at_least_t: Tensor
    min_step: Tensor
    min_step_t: Tensor
    max_step: Tensor
    max_step_t: Tensor
    sum_index: Tensor
    difference_index: Tensor
    bit_base: Tensor
    bit_step: Tensor
    bit_row: Tensor


@functools.lru_cache(maxsize=64)
def gate_constants(size: int, dtype: torch.dtype, device: torch.device) -> GateConstants:
    """The :class:`GateConstants` for M = ``size`` values, built once per (size, dtype, device)."""
    value = torch.arange(size, device=device)
    out, x = value[:, None], value[None, :]
    below, at_most, at_least = ((x < out).to(dtype), (x <= out).to(dtype), (x >= out).to(dtype))
    eye = torch.eye(size, dtype=dtype, device=device)
    min_step = eye - (x == out + 1).to(dtype)
    max_step = eye - (x == out - 1).to(dtype)
    bit_row = torch.zeros(size, dtype=dtype, device=device)
    bit_row[0], bit_row[1] = -1.0, 1.0
    bit_base = torch.zeros(size, 1, dtype=dtype, device=device)
    bit_base[0] = 1.0
    transposed = [m.T.contiguous() for m in (below, at_most, at_least, min_step, max_step)]
    return GateConstants(below, transposed[0], at_most, transposed[1], at_least, transposed[2],
                         min_step, transposed[3], max_step, transposed[4],
                         ((out - x) % size).flatten(), ((out + x) % size).flatten(),
                         bit_base, bit_row[:, None].clone(), bit_row)


def _constants_for(x: Tensor) -> GateConstants:
    return gate_constants(x.shape[0], x.dtype, x.device)


def _gathered(values: Tensor, index: Tensor) -> Tensor:
    """``out[c, x] = values[index[c * M + x]]``: ``[M, B]`` -> ``[M, M, B]``."""
    return values.index_select(0, index).view(values.shape[0], values.shape[0], *values.shape[1:])


def _convolve(a: Tensor, b: Tensor) -> Tensor:
    """``out[c] = sum_x a[x] b[(c - x) mod M]``: the distribution of A + B, ``[M, B]``."""
    if a.shape[0] >= FFT_MIN_SIZE:
        spectrum = torch.fft.rfft(a, dim=0) * torch.fft.rfft(b, dim=0)
        return torch.fft.irfft(spectrum, n=a.shape[0], dim=0)
    return (_gathered(b, _constants_for(a).sum_index) * a).sum(1)


def _correlate(a: Tensor, b: Tensor) -> Tensor:
    """``out[c] = sum_x a[x] b[(c + x) mod M]``: the distribution of B - A, ``[M, B]``."""
    if a.shape[0] >= FFT_MIN_SIZE:
        spectrum = torch.fft.rfft(a, dim=0).conj() * torch.fft.rfft(b, dim=0)
        return torch.fft.irfft(spectrum, n=a.shape[0], dim=0)
    return (_gathered(b, _constants_for(a).difference_index) * a).sum(1)


def _nonnegative(x: Tensor) -> Tensor:
    """FFT rounding leaves values of about -1e-7 where the exact probability is 0: clamp them."""
    return x.clamp_min(0.0) if x.shape[0] >= FFT_MIN_SIZE else x


def _bernoulli(p_true: Tensor, like: Tensor) -> Tensor:
    """``[1 - p, p, 0, ...]`` for ``p_true`` ``[B]``: a distribution on {0, 1}, ``[M, B]``."""
    constants = _constants_for(like)
    return torch.addcmul(constants.bit_base, constants.bit_step, p_true)


def _bit_gradient(grad: Tensor) -> Tensor:
    """d loss / d p for an output ``[1 - p, p, 0, ...]``: ``grad[1] - grad[0]``, ``[B]``."""
    return _constants_for(grad).bit_row @ grad


def _lt(a: Tensor, b: Tensor) -> Tensor:
    return _bernoulli(torch.linalg.vecdot(torch.mm(_constants_for(a).below, a), b, dim=0), a)


def _le(a: Tensor, b: Tensor) -> Tensor:
    return _bernoulli(torch.linalg.vecdot(torch.mm(_constants_for(a).at_most, a), b, dim=0), a)


def _eq(a: Tensor, b: Tensor) -> Tensor:
    return _bernoulli(torch.linalg.vecdot(a, b, dim=0), a)


def _min(a: Tensor, b: Tensor) -> Tensor:
    # U(c) = P(A >= c) P(B >= c);  P(min = c) = U(c) - U(c + 1).
    constants = _constants_for(a)
    return torch.mm(constants.min_step, torch.mm(constants.at_least, a) * torch.mm(constants.at_least, b))


def _max(a: Tensor, b: Tensor) -> Tensor:
    # V(c) = P(A <= c) P(B <= c);  P(max = c) = V(c) - V(c - 1).
    constants = _constants_for(a)
    return torch.mm(constants.max_step, torch.mm(constants.at_most, a) * torch.mm(constants.at_most, b))


GATE_FUNCTIONS = {  # value-major (a [M, B], b [M, B] | None) -> output distribution [M, B]
    "inc": lambda a, b: torch.roll(a, shifts=1, dims=0),
    "dec": lambda a, b: torch.roll(a, shifts=-1, dims=0),
    "add": lambda a, b: _nonnegative(_convolve(a, b)),
    "sub": lambda a, b: _nonnegative(_correlate(b, a)),
    "lt": _lt,
    "le": _le,
    "eq": _eq,
    "min": _min,
    "max": _max,
}
"""Forward functions of the unary and binary gates, value-major."""


def _add_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    if a.shape[0] >= FFT_MIN_SIZE:
        return _correlate(b, grad), _correlate(a, grad)
    shifted = _gathered(grad, _constants_for(a).difference_index)  # grad[x + y] at [x, y]
    return (shifted * b).sum(1), (shifted * a).sum(1)


def _sub_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    if a.shape[0] >= FFT_MIN_SIZE:
        return _convolve(grad, b), _correlate(grad, a)
    shifted = _gathered(grad, _constants_for(a).sum_index)  # grad[x - y] at [x, y]
    return (shifted * b).sum(1), (shifted * a[:, None]).sum(0)


def _comparison_gradient(order: Tensor, order_t: Tensor, a: Tensor, b: Tensor,
                         grad: Tensor) -> tuple[Tensor, Tensor]:
    # p = b . (order @ a), so dp/da = order^T b and dp/db = order @ a.
    bit = _bit_gradient(grad)
    return bit * torch.mm(order_t, b), bit * torch.mm(order, a)


def _lt_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    constants = _constants_for(a)
    return _comparison_gradient(constants.below, constants.below_t, a, b, grad)


def _le_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    constants = _constants_for(a)
    return _comparison_gradient(constants.at_most, constants.at_most_t, a, b, grad)


def _eq_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    bit = _bit_gradient(grad)
    return bit * b, bit * a


def _extremum_gradient(step_t: Tensor, cumulative: Tensor, cumulative_t: Tensor, a: Tensor, b: Tensor,
                       grad: Tensor) -> tuple[Tensor, Tensor]:
    # out = step @ (F(a) * F(b)) with F(x) = cumulative @ x.
    grad_product = torch.mm(step_t, grad)
    return (torch.mm(cumulative_t, grad_product * torch.mm(cumulative, b)),
            torch.mm(cumulative_t, grad_product * torch.mm(cumulative, a)))


def _min_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    constants = _constants_for(a)
    return _extremum_gradient(constants.min_step_t, constants.at_least, constants.at_least_t, a, b, grad)


def _max_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    constants = _constants_for(a)
    return _extremum_gradient(constants.max_step_t, constants.at_most, constants.at_most_t, a, b, grad)


GATE_GRADIENTS = {  # value-major (a, b, d loss / d output) -> (d loss / d a, d loss / d b or None), all [M, B]
    "inc": lambda a, b, g: (torch.roll(g, shifts=-1, dims=0), None),
    "dec": lambda a, b, g: (torch.roll(g, shifts=1, dims=0), None),
    "add": _add_gradient,
    "sub": _sub_gradient,
    "lt": _lt_gradient,
    "le": _le_gradient,
    "eq": _eq_gradient,
    "min": _min_gradient,
    "max": _max_gradient,
}
"""Vector-Jacobian products of :data:`GATE_FUNCTIONS`, for the machine's hand-written backward."""


def read_values(memory: Tensor, address: Tensor) -> Tensor:
    """Value-major READ: ``out[j] = sum_i address[i] memory[i, j]``; memory ``[M, M, B]``, address ``[M, B]``."""
    return torch.linalg.vecdot(address[:, None], memory, dim=0)


def write_values(memory: Tensor, address: Tensor, value: Tensor) -> Tensor:
    """Value-major WRITE: ``memory'[i] = memory[i] + address[i] (value - memory[i])``, ``[M, M, B]``."""
    return torch.addcmul(memory, address[:, None], value - memory)


def apply_gate(name: str, a: Tensor | None = None, b: Tensor | None = None, *,
               batch_size: int | None = None, memory_size: int | None = None) -> Tensor:
    """Apply an arithmetic, comparison or constant gate to distributions ``a``, ``b``: ``[B, M]``.

    Constants ignore their inputs (pass ``a`` or ``batch_size`` and ``memory_size`` to give the
    shape); unary gates ignore ``b``. READ and WRITE are :func:`read` and :func:`write`.
    Returns the exact distribution of the gate's output, ``[B, M]``.
    """
    check_gate_name(name)
    if name in ("read", "write"):
        raise ValueError(f"gate {name!r} touches memory: call nram.gates.{name}() instead")
    if name in GATE_CONSTANTS:
        reference = a if a is not None else b
        if reference is not None:
            batch_size, memory_size = reference.shape
            return one_hot_value(GATE_CONSTANTS[name], batch_size, memory_size,
                                 dtype=reference.dtype, device=reference.device)
        if batch_size is None or memory_size is None:
            raise ValueError(f"constant gate {name!r} needs an input or batch_size and memory_size")
        return one_hot_value(GATE_CONSTANTS[name], batch_size, memory_size)
    if a is None or (GATE_ARITY[name] == 2 and b is None):
        raise ValueError(f"gate {name!r} takes {GATE_ARITY[name]} input(s)")
    _check_distribution_shape(a, "a")
    if GATE_ARITY[name] == 2:
        _check_distribution_shape(b, "b")
        if b.shape != a.shape:
            raise ValueError(f"gate {name!r}: inputs have shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return GATE_FUNCTIONS[name](a.T, None if b is None else b.T).T


def _check_distribution_shape(x: Tensor, what: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"gate input {what} must be [batch, M], got shape {tuple(x.shape)}")
    if x.shape[-1] < 2:
        raise ValueError(f"gate input {what} has M = {x.shape[-1]} values; M must be >= 2")


def read(memory: Tensor, address: Tensor) -> Tensor:
    """READ: ``out[b, j] = sum_i address[b, i] memory[b, i, j]``; memory ``[B, M, M]``, address ``[B, M]``."""
    return read_values(memory.permute(1, 2, 0), address.T).T


def write(memory: Tensor, address: Tensor, value: Tensor) -> Tensor:
    """WRITE: ``memory'[b, i] = (1 - address[b, i]) memory[b, i] + address[b, i] value[b]``.

    memory ``[B, M, M]``, address and value ``[B, M]``; returns the new memory ``[B, M, M]``.
    The gate's own output value is the constant 0 (see :func:`one_hot_value`).
    """
    return write_values(memory.permute(1, 2, 0), address.T, value.T).permute(2, 0, 1)
