"""The 14 NRAM gates, lifted exactly to distributions over {0..M-1}.

Every value is a probability vector ``[B, M]``. An integer function ``m`` of the gate's
inputs is lifted as ``P(m(A, B) = c) = sum_{a,b} A[a] B[b] [m(a, b) = c]``, computed here
in closed form instead of through an ``[M, M, M]`` table:

- ADD / SUB: circular convolution / correlation (O(M^2), or O(M log M) by FFT for large M);
- INC / DEC: a roll of the distribution;
- LT / LE: ``P(A < B) = sum_b B[b] P(A < b)`` with the cumulative sum of A (a product with a
  constant triangular matrix, which at these sizes is cheaper than ``cumsum`` and its friends);
- EQ: a dot product;
- MIN / MAX: products of survival / cumulative distribution functions, the same way.

READ and WRITE touch memory ``[B, M, M]`` (``memory[b, i, j] = P(cell i holds j)``) and are
separate functions because their signatures differ.
"""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=64)
def _order_matrices(size: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Constant ``[M, M]`` matrices that turn the comparison gates into a few matmuls.

    ``below[x, c] = [x < c]`` and ``at_most[x, c] = [x <= c]`` (so ``a @ at_most`` is the CDF
    of a, ``a @ at_most.T`` its survival function); ``down[y, c] = [y = c] - [y = c + 1]`` and
    ``up[y, c] = [y = c] - [y = c - 1]`` take differences of neighbouring values.
    """
    index = torch.arange(size, device=device)
    below = (index[:, None] < index[None, :]).to(dtype)
    at_most = (index[:, None] <= index[None, :]).to(dtype)
    eye = torch.eye(size, dtype=dtype, device=device)
    neighbours = torch.ones(size - 1, dtype=dtype, device=device)
    return below, at_most, eye - torch.diag(neighbours, -1), eye - torch.diag(neighbours, 1)


@functools.lru_cache(maxsize=64)
def _bit_basis(size: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(e0, e1 - e0)``, ``[M]`` each: a distribution on {0, 1} is ``e0 + p (e1 - e0)``."""
    e0 = torch.zeros(size, dtype=dtype, device=device)
    e0[0] = 1.0
    step = -e0.clone()
    step[1] = 1.0
    return e0, step


def _bernoulli(p_true: Tensor, like: Tensor) -> Tensor:
    """A distribution on {0, 1} with ``P(1) = p_true`` ``[B]``, padded with zeros to ``[B, M]``."""
    e0, step = _bit_basis(like.shape[-1], like.dtype, like.device)
    return torch.addcmul(e0, p_true[:, None], step)


def _bit_gradient(grad: Tensor) -> Tensor:
    """d loss / d P(1) for an output ``[1 - p, p, 0, ...]``: ``grad[:, 1] - grad[:, 0]``, as ``[B, 1]``."""
    return grad @ _bit_basis(grad.shape[-1], grad.dtype, grad.device)[1][:, None]


def _matrices(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _order_matrices(x.shape[-1], x.dtype, x.device)


def _lt(a: Tensor, b: Tensor) -> Tensor:
    below = _matrices(a)[0]
    return _bernoulli(((a @ below) * b).sum(-1), a)  # P(A < B) = sum_y B[y] P(A < y)


def _le(a: Tensor, b: Tensor) -> Tensor:
    at_most = _matrices(a)[1]
    return _bernoulli(((a @ at_most) * b).sum(-1), a)


def _eq(a: Tensor, b: Tensor) -> Tensor:
    return _bernoulli((a * b).sum(-1), a)


def _min(a: Tensor, b: Tensor) -> Tensor:
    # U(c) = P(A >= c) P(B >= c);  P(min = c) = U(c) - U(c + 1).
    _, at_most, down, _ = _matrices(a)
    return ((a @ at_most.T) * (b @ at_most.T)) @ down


def _max(a: Tensor, b: Tensor) -> Tensor:
    # V(c) = P(A <= c) P(B <= c);  P(max = c) = V(c) - V(c - 1).
    _, at_most, _, up = _matrices(a)
    return ((a @ at_most) * (b @ at_most)) @ up


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


def _lt_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    below, bit = _matrices(a)[0], _bit_gradient(grad)
    return bit * (b @ below.T), bit * (a @ below)


def _le_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    at_most, bit = _matrices(a)[1], _bit_gradient(grad)
    return bit * (b @ at_most.T), bit * (a @ at_most)


def _min_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    _, at_most, down, _ = _matrices(a)
    grad_both = grad @ down.T
    return (grad_both * (b @ at_most.T)) @ at_most, (grad_both * (a @ at_most.T)) @ at_most


def _max_gradient(a: Tensor, b: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    _, at_most, _, up = _matrices(a)
    grad_both = grad @ up.T
    return (grad_both * (b @ at_most)) @ at_most.T, (grad_both * (a @ at_most)) @ at_most.T


GATE_GRADIENTS = {  # (a, b, d loss / d output) -> (d loss / d a, d loss / d b or None), all [B, M]
    "inc": lambda a, b, g: (torch.roll(g, shifts=-1, dims=-1), None),
    "dec": lambda a, b, g: (torch.roll(g, shifts=1, dims=-1), None),
    "add": lambda a, b, g: (_correlate(b, g), _correlate(a, g)),
    "sub": lambda a, b, g: (_convolve(g, b), _correlate(g, a)),
    "lt": _lt_gradient,
    "le": _le_gradient,
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
