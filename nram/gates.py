"""The 14 NRAM gates, lifted exactly to distributions over {0..M-1}.

Every value is a probability vector ``[B, M]``. An integer function ``m`` of the gate's
inputs is lifted as ``P(m(A, B) = c) = sum_{a,b} A[a] B[b] [m(a, b) = c]``, computed here
in closed form instead of through an ``[M, M, M]`` table:

- ADD / SUB: circular convolution / correlation (O(M^2), or O(M log M) by FFT for large M);
- INC / DEC: a roll of the distribution;
- LT / LE: ``P(A < B) = sum_b B[b] P(A < b)`` with a cumulative sum of A;
- EQ: a dot product;
- MIN / MAX: products of survival / cumulative distribution functions.

READ and WRITE touch memory ``[B, M, M]`` (``memory[b, i, j] = P(cell i holds j)``) and are
separate functions because their signatures differ.
"""

from __future__ import annotations

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

FFT_MIN_SIZE = 128
"""From this many values on, ADD and SUB use the FFT (O(M log M)) instead of a gather (O(M^2))."""

_CONSTANTS = {"zero": 0, "one": 1, "two": 2}


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


def _difference_index(size: int, sign: int, device: torch.device) -> Tensor:
    """``index[c, a] = (c - sign * a) mod size``: the circulant pattern of ADD (+1) and SUB (-1)."""
    values = torch.arange(size, device=device)
    return (values[:, None] - sign * values[None, :]) % size


def _circular(a: Tensor, b: Tensor, sign: int) -> Tensor:
    """``out[c] = sum_x a[x] b[(c - sign x) mod M]``: P(a + b = c) for sign=+1, P(b - a = c) for -1."""
    size = a.shape[-1]
    if size >= FFT_MIN_SIZE:
        fa = torch.fft.rfft(a, dim=-1)
        fb = torch.fft.rfft(b, dim=-1)
        # Rounding can leave values of about -1e-7 where the exact answer is 0.
        return torch.fft.irfft(fb * (fa if sign > 0 else fa.conj()), n=size, dim=-1).clamp_min(0.0)
    circulant = b[:, _difference_index(size, sign, a.device)]  # [B, M(c), M(x)]
    return torch.bmm(circulant, a.unsqueeze(-1)).squeeze(-1)


def _bernoulli(p_true: Tensor, memory_size: int) -> Tensor:
    """A distribution on {0, 1} with ``P(1) = p_true``, padded with zeros to ``[B, M]``."""
    padding = p_true.new_zeros(p_true.shape[0], memory_size - 2)
    return torch.cat([(1.0 - p_true)[:, None], p_true[:, None], padding], dim=-1)


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
    if name in _CONSTANTS:
        reference = a if a is not None else b
        if reference is not None:
            batch_size, memory_size = reference.shape
            return one_hot_value(_CONSTANTS[name], batch_size, memory_size,
                                 dtype=reference.dtype, device=reference.device)
        if batch_size is None or memory_size is None:
            raise ValueError(f"constant gate {name!r} needs an input or batch_size and memory_size")
        return one_hot_value(_CONSTANTS[name], batch_size, memory_size)
    if a is None or (GATE_ARITY[name] == 2 and b is None):
        raise ValueError(f"gate {name!r} takes {GATE_ARITY[name]} input(s)")
    _check_distribution_shape(a, "a")
    if GATE_ARITY[name] == 2:
        _check_distribution_shape(b, "b")
        if b.shape != a.shape:
            raise ValueError(f"gate {name!r}: inputs have shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return _GATE_FUNCTIONS[name](a, b)


def _check_distribution_shape(x: Tensor, what: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"gate input {what} must be [batch, M], got shape {tuple(x.shape)}")
    if x.shape[-1] < 2:
        raise ValueError(f"gate input {what} has M = {x.shape[-1]} values; M must be >= 2")


def _lt(a: Tensor, b: Tensor) -> Tensor:
    below = torch.cumsum(a, dim=-1) - a  # below[x] = P(A < x)
    return _bernoulli((b * below).sum(-1), a.shape[-1])


def _le(a: Tensor, b: Tensor) -> Tensor:
    return _bernoulli((b * torch.cumsum(a, dim=-1)).sum(-1), a.shape[-1])


def _eq(a: Tensor, b: Tensor) -> Tensor:
    return _bernoulli((a * b).sum(-1), a.shape[-1])


def _min(a: Tensor, b: Tensor) -> Tensor:
    # survival[x] = P(X >= x); P(min = x) = S(x) - S(x + 1) with S(M) = 0.
    both_at_least = _survival(a) * _survival(b)
    return both_at_least - torch.nn.functional.pad(both_at_least[:, 1:], (0, 1))


def _max(a: Tensor, b: Tensor) -> Tensor:
    # P(max = x) = F(x) - F(x - 1) with F(-1) = 0.
    both_at_most = torch.cumsum(a, dim=-1) * torch.cumsum(b, dim=-1)
    return both_at_most - torch.nn.functional.pad(both_at_most[:, :-1], (1, 0))


def _survival(x: Tensor) -> Tensor:
    return torch.flip(torch.cumsum(torch.flip(x, dims=(-1,)), dim=-1), dims=(-1,))


_GATE_FUNCTIONS = {
    "inc": lambda a, b: torch.roll(a, shifts=1, dims=-1),
    "dec": lambda a, b: torch.roll(a, shifts=-1, dims=-1),
    "add": lambda a, b: _circular(a, b, sign=+1),
    "sub": lambda a, b: _circular(b, a, sign=-1),
    "lt": _lt,
    "le": _le,
    "eq": _eq,
    "min": _min,
    "max": _max,
}


def read(memory: Tensor, address: Tensor) -> Tensor:
    """READ: ``out[b, j] = sum_i address[b, i] memory[b, i, j]``; memory ``[B, M, M]``, address ``[B, M]``."""
    return torch.bmm(address.unsqueeze(1), memory).squeeze(1)


def write(memory: Tensor, address: Tensor, value: Tensor) -> Tensor:
    """WRITE: ``memory'[b, i] = (1 - address[b, i]) memory[b, i] + address[b, i] value[b]``.

    memory ``[B, M, M]``, address and value ``[B, M]``; returns the new memory ``[B, M, M]``.
    The gate's own output value is the constant 0 (see :func:`one_hot_value`).
    """
    weight = address.unsqueeze(-1)
    return memory + weight * (value.unsqueeze(1) - memory)
