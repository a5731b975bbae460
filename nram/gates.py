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
import torch.nn.functional as F
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

GATE_CONSTANTS: dict[str, int] = {"zero": 0, "one": 1, "two": 2}
"""The value each constant gate outputs (mod M)."""


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


def _convolve(a: Tensor, b: Tensor) -> Tensor:
    """``out[c] = sum_x a[x] b[(c - x) mod M]``: the distribution of A + B."""
    size = a.shape[-1]
    if size >= FFT_MIN_SIZE:
        spectrum = torch.fft.rfft(a, dim=-1) * torch.fft.rfft(b, dim=-1)
        return torch.fft.irfft(spectrum, n=size, dim=-1)
    # b[(c - x) mod M] = windows[c + 1, M - 1 - x], windows a strided view of [b, b].
    windows = torch.cat([b, b], dim=-1).unfold(-1, size, 1)[:, 1:]
    return torch.bmm(windows, torch.flip(a, dims=(-1,)).unsqueeze(-1)).squeeze(-1)


def _correlate(a: Tensor, b: Tensor) -> Tensor:
    """``out[c] = sum_x a[x] b[(c + x) mod M]``: the distribution of B - A."""
    size = a.shape[-1]
    if size >= FFT_MIN_SIZE:
        spectrum = torch.fft.rfft(a, dim=-1).conj() * torch.fft.rfft(b, dim=-1)
        return torch.fft.irfft(spectrum, n=size, dim=-1)
    windows = torch.cat([b, b], dim=-1).unfold(-1, size, 1)[:, :size]
    return torch.bmm(windows, a.unsqueeze(-1)).squeeze(-1)


def _nonnegative(x: Tensor) -> Tensor:
    """FFT rounding leaves values of about -1e-7 where the exact probability is 0: clamp them."""
    return x.clamp_min(0.0) if x.shape[-1] >= FFT_MIN_SIZE else x


def _bernoulli(p_true: Tensor, memory_size: int) -> Tensor:
    """A distribution on {0, 1} with ``P(1) = p_true``, padded with zeros to ``[B, M]``."""
    return F.pad(torch.stack([1.0 - p_true, p_true], dim=-1), (0, memory_size - 2))


def _reverse_cumsum(x: Tensor) -> Tensor:
    """``out[c] = sum_{y >= c} x[y]`` (a survival function when x is a distribution)."""
    return x.sum(-1, keepdim=True) - torch.cumsum(x, dim=-1) + x


def _shift_down(x: Tensor) -> Tensor:
    """``out[c] = x[c + 1]``, with 0 past the end."""
    return F.pad(x[:, 1:], (0, 1))


def _shift_up(x: Tensor) -> Tensor:
    """``out[c] = x[c - 1]``, with 0 before the start."""
    return F.pad(x[:, :-1], (1, 0))


def _lt(a: Tensor, b: Tensor) -> Tensor:
    # P(A < B) = sum_y B[y] P(A < y)
    return _bernoulli((b * (torch.cumsum(a, dim=-1) - a)).sum(-1), a.shape[-1])


def _le(a: Tensor, b: Tensor) -> Tensor:
    return _bernoulli((b * torch.cumsum(a, dim=-1)).sum(-1), a.shape[-1])


def _eq(a: Tensor, b: Tensor) -> Tensor:
    return _bernoulli((a * b).sum(-1), a.shape[-1])


def _min(a: Tensor, b: Tensor) -> Tensor:
    # U(c) = P(A >= c) P(B >= c);  P(min = c) = U(c) - U(c + 1).
    both_at_least = _reverse_cumsum(a) * _reverse_cumsum(b)
    return both_at_least - _shift_down(both_at_least)


def _max(a: Tensor, b: Tensor) -> Tensor:
    # V(c) = P(A <= c) P(B <= c);  P(max = c) = V(c) - V(c - 1).
    both_at_most = torch.cumsum(a, dim=-1) * torch.cumsum(b, dim=-1)
    return both_at_most - _shift_up(both_at_most)


GATE_FUNCTIONS = {  # (a [B, M], b [B, M] | None) -> output distribution [B, M]
    "inc": lambda a, b: torch.roll(a, shifts=1, dims=-1),
    "dec": lambda a, b: torch.roll(a, shifts=-1, dims=-1),
    "add": lambda a, b: _nonnegative(_convolve(a, b)),
    "sub": lambda a, b: _nonnegative(_correlate(b, a)),
    "lt": _lt,
    "le": _le,
    "eq": _eq,
    "min": _min,
    "max": _max,
}
"""Forward functions of the unary and binary gates."""


def _bit_gradient(grad: Tensor) -> Tensor:
    """d loss / d P(1) for an output ``[1 - p, p, 0, ...]``: ``grad[:, 1] - grad[:, 0]``, as ``[B, 1]``."""
    return (grad[:, 1] - grad[:, 0])[:, None]


def _min_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    grad_both = grad - _shift_up(grad)
    return (torch.cumsum(grad_both * _reverse_cumsum(b), dim=-1),
            torch.cumsum(grad_both * _reverse_cumsum(a), dim=-1))


def _max_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    grad_both = grad - _shift_down(grad)
    return (_reverse_cumsum(grad_both * torch.cumsum(b, dim=-1)),
            _reverse_cumsum(grad_both * torch.cumsum(a, dim=-1)))


GATE_GRADIENTS = {  # (a, b, d loss / d output) -> (d loss / d a, d loss / d b or None), all [B, M]
    "inc": lambda a, b, g: (torch.roll(g, shifts=-1, dims=-1), None),
    "dec": lambda a, b, g: (torch.roll(g, shifts=1, dims=-1), None),
    "add": lambda a, b, g: (_correlate(b, g), _correlate(a, g)),
    "sub": lambda a, b, g: (_convolve(g, b), _correlate(g, a)),
    "lt": lambda a, b, g: (_bit_gradient(g) * (_reverse_cumsum(b) - b),
                           _bit_gradient(g) * (torch.cumsum(a, dim=-1) - a)),
    "le": lambda a, b, g: (_bit_gradient(g) * _reverse_cumsum(b), _bit_gradient(g) * torch.cumsum(a, dim=-1)),
    "eq": lambda a, b, g: (_bit_gradient(g) * b, _bit_gradient(g) * a),
    "min": _min_gradient,
    "max": _max_gradient,
}
"""Vector-Jacobian products of :data:`GATE_FUNCTIONS`, for the machine's hand-written backward."""


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
    return GATE_FUNCTIONS[name](a, b)


def _check_distribution_shape(x: Tensor, what: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"gate input {what} must be [batch, M], got shape {tuple(x.shape)}")
    if x.shape[-1] < 2:
        raise ValueError(f"gate input {what} has M = {x.shape[-1]} values; M must be >= 2")


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
