"""Dropout for the controller MLP: batchwise (Graham et al. 2015) and samplewise.

**Batchwise dropout.** One kept set of units per minibatch, exactly ``k = floor(n (1 - p))``
of the ``n`` units of a layer, shared by every example and every timestep of a rollout. A
layer then only needs the kept submatrix of its weights::

    y[:, K_out] = s * x[:, K_in] @ W[K_out, K_in]^T + b[K_out],   s = n_in / k_in

``x[:, K_in]`` arrives compact (``[..., k_in]``, produced by the previous layer) and
``y[:, K_out]`` leaves compact (``[..., k_out]``): dropped units are never computed, forward
or backward, and only the kept submatrix receives a gradient. The matmul work of a layer is
``(k_in / n_in) (k_out / n_out)`` of the dense layer's. The pattern is drawn by an explicit
:meth:`BatchwiseDropoutLinear.resample` (once per rollout, not per forward call); the
submatrix ``s * W[K_out, K_in]`` is gathered once per pattern and reused for all T steps,
so its backward scatter into ``W.grad`` also happens once.

**Scaling: inverted dropout.** The factor ``s = n_in / k_in`` (the exact inverse of the kept
fraction) is folded into the gathered submatrix at train time, so eval mode is the plain
full layer ``y = x W^T + b`` with no rescaling. Averaged over all ``C(n_in, k_in)`` input
patterns, the train-time output equals the eval output exactly. (Graham et al. instead
train unscaled and multiply ``W`` by ``1 - p`` at test time; the two differ only by where the
constant sits.) Dropped weights get exactly zero gradient; an optimizer with momentum or
weight decay still moves them, as for any zero gradient.

**Samplewise dropout** (:class:`SamplewiseDropoutMLP`): standard masked dropout, a
Bernoulli(1 - p) mask per example scaled by ``1 / (1 - p)``, dense matmuls. It has the same
interface as :class:`BatchwiseDropoutMLP` and, like it, holds its masks for the whole
rollout (until the next :meth:`~SamplewiseDropoutMLP.resample`): the two differ only in
whether the pattern is per minibatch or per example, and in what is computed.

Both MLPs name their layers ``layers.0 .. layers.L`` with ``nn.Linear`` weights, so their
state dicts are interchangeable with each other and with a plain MLP laid out the same way;
in eval mode both are that plain ReLU MLP. Both split as ``forward(x) = F.linear(features(x),
*readout_weight())`` for callers that rearrange the output layer themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kept_count(n: int, p: float) -> int:
    """Number of units batchwise dropout keeps out of ``n`` at rate ``p``: ``floor(n (1 - p))``."""
    return math.floor(n * (1.0 - p) + 1e-9)


def keep_indices(n: int, p: float, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """A uniformly random kept set: ``LongTensor[floor(n (1 - p))]`` of distinct indices, sorted.

    Drawn on the generator's device (CPU when none is given), returned on ``device``.
    """
    draw_device = generator.device if generator is not None else "cpu"
    perm = torch.randperm(n, generator=generator, device=draw_device)
    return perm[:kept_count(n, p)].sort().values.to(device)


def _check_rate(p: float, n: int) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {p}")
    if kept_count(n, p) == 0:
        raise ValueError(f"dropout rate {p} keeps no unit out of {n}")


class BatchwiseDropoutLinear(nn.Linear):
    """``nn.Linear`` whose output units are dropped batchwise, computed on the kept submatrix.

    Weights ``W: [out_features, in_features]``, bias ``b: [out_features]`` (same parameters,
    names and init as ``nn.Linear``). ``p`` is the dropout rate of this layer's *outputs*; the
    input's kept set comes from the previous layer as ``in_keep``.

    Training mode: ``forward(x [..., k_in], in_keep [k_in]) -> [..., k_out]`` with
    ``y = (n_in / k_in) x @ W[keep, in_keep]^T + b[keep]`` (``in_keep=None``: x is full width,
    no input scaling; ``p = 0``: all outputs, ``keep`` is None). Call :meth:`resample` before
    the first forward of each rollout. Eval mode: ``forward(x [..., in_features]) ->
    [..., out_features]``, the full layer.
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        _check_rate(p, out_features)
        self.p = p
        self.keep: Tensor | None = None
        """Kept output indices, sorted ``[k_out]``; None means all (``p = 0`` or not drawn yet)."""
        self._cache: tuple[tuple, Tensor, Tensor | None] | None = None

    @property
    def out_kept(self) -> int:
        """Width of this layer's compact output in training mode: ``floor(out_features (1 - p))``."""
        return kept_count(self.out_features, self.p)

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw a new kept set of output units (no-op for ``p = 0``)."""
        if self.p > 0:
            self.set_keep(keep_indices(self.out_features, self.p, generator=generator,
                                       device=self.weight.device))

    def set_keep(self, keep: Tensor) -> None:
        """Use the given kept output indices ``[out_kept]`` (distinct, any order) as the pattern."""
        if keep.shape != (self.out_kept,):
            raise ValueError(f"expected {self.out_kept} kept indices, got shape {tuple(keep.shape)}")
        self.keep = keep.to(self.weight.device)
        self._cache = None

    def submatrix(self, in_keep: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``(s W[keep, in_keep] [k_out, k_in], b[keep] [k_out])``, gathered once and cached.

        The cache is rebuilt when the pattern, ``in_keep``, the parameters (an optimizer step or
        ``load_state_dict`` changes their version) or the grad mode change, and dropped when a
        backward pass has gone through it (its graph is freed then). Fused optimizers update
        in place without bumping the version; that is harmless after a backward (the cache
        is gone) but two no-grad forwards around such a step need a :meth:`resample` between.
        """
        key = (self.keep, in_keep, self.weight.data_ptr(), self.weight._version,
               None if self.bias is None else self.bias._version, torch.is_grad_enabled())
        if self._cache is not None and all(a is b if isinstance(a, Tensor) else a == b
                                           for a, b in zip(self._cache[0], key)):
            return self._cache[1], self._cache[2]
        weight, bias = self.weight, self.bias
        if self.keep is not None:
            weight = weight.index_select(0, self.keep)
            bias = None if bias is None else bias.index_select(0, self.keep)
        if in_keep is not None:
            weight = weight.index_select(1, in_keep) * (self.in_features / in_keep.numel())
        if weight.requires_grad:
            weight.register_hook(self._forget)
        self._cache = (key, weight, bias)
        return weight, bias

    def _forget(self, grad: Tensor) -> None:
        self._cache = None

    def forward(self, x: Tensor, in_keep: Tensor | None = None) -> Tensor:
        if not self.training:
            if in_keep is not None:
                raise ValueError("eval mode computes the full layer: pass full-width x and no in_keep")
            return F.linear(x, self.weight, self.bias)
        if self.p > 0 and self.keep is None:
            raise RuntimeError("no dropout pattern drawn: call resample() before the rollout")
        if self.keep is None and in_keep is None:
            return F.linear(x, self.weight, self.bias)
        weight, bias = self.submatrix(in_keep)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


class _DropoutMLP(nn.Module):
    """Shared layout: ``layers.0: input->H``, ``layers.1..num_hidden-1: H->H``, last: ``H->output``.

    ``linear(in_features, out_features, p)`` builds a layer; the output layer gets ``p = 0``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_hidden: int,
                 p: float, linear: Callable[[int, int, float], nn.Linear]) -> None:
        super().__init__()
        if num_hidden < 1:
            raise ValueError(f"num_hidden must be >= 1, got {num_hidden}")
        _check_rate(p, hidden_size)
        self.p = p
        sizes = [input_size] + [hidden_size] * num_hidden
        self.layers = nn.ModuleList([linear(a, b, p) for a, b in zip(sizes[:-1], sizes[1:])]
                                    + [linear(hidden_size, output_size, 0.0)])

    @property
    def readout(self) -> nn.Linear:
        """The output layer ``layers[-1]`` (hidden -> output)."""
        return self.layers[-1]

    def readout_weight(self) -> tuple[Tensor, Tensor | None]:
        """``(weight [output, h], bias [output])`` that map :meth:`features` to the output:
        ``forward(x) == F.linear(features(x), *readout_weight())``."""
        return self.readout.weight, self.readout.bias

    def forward(self, x: Tensor) -> Tensor:
        """``x: [..., input_size] -> [..., output_size]``."""
        return F.linear(self.features(x), *self.readout_weight())


class BatchwiseDropoutMLP(_DropoutMLP):
    """ReLU MLP with batchwise dropout (rate ``p``) after every hidden layer; compact activations.

    ``forward(x [..., input_size]) -> [..., output_size]``. Training mode: call
    :meth:`resample` once per rollout; hidden activations travel compact (``[..., k]`` with
    ``k = floor(H (1 - p))``) from layer to layer, each layer multiplying by its cached
    ``[k_out, k_in]`` submatrix. Eval mode: the plain MLP. ``p = 0``: the plain MLP always.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_hidden: int = 2,
                 p: float = 0.5) -> None:
        super().__init__(input_size, hidden_size, output_size, num_hidden, p, BatchwiseDropoutLinear)

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw one kept set per hidden layer, for every example and step until the next call."""
        for layer in self.layers:
            layer.resample(generator)

    @property
    def hidden_keep(self) -> Tensor | None:
        """The columns :meth:`features` returns: the last hidden layer's kept units in training
        mode, None (all H) in eval mode or for ``p = 0``."""
        return self.layers[-2].keep if self.training else None

    def features(self, x: Tensor) -> Tensor:
        """Last hidden layer: ``[..., k]`` (units :attr:`hidden_keep`) in training, ``[..., H]`` in eval."""
        keep = None
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x, keep))
            keep = layer.keep if self.training else None
        return x

    def readout_weight(self) -> tuple[Tensor, Tensor | None]:
        """``(s W_out[:, hidden_keep] [output, k], b_out)`` in training (cached per pattern),
        ``(W_out, b_out)`` otherwise."""
        keep = self.hidden_keep
        return super().readout_weight() if keep is None else self.readout.submatrix(keep)


class SamplewiseDropoutMLP(_DropoutMLP):
    """ReLU MLP with standard (per-example, masked) dropout after every hidden layer.

    ``forward(x [..., input_size]) -> [..., output_size]``. Training mode: the first forward
    after :meth:`resample` draws masks ``m_l [..., H] ~ Bernoulli(1 - p) / (1 - p)`` for the
    batch shape of ``x``; ``h_l = relu(W_l h_{l-1} + b_l) * m_l`` reuses them until the next
    ``resample`` (one pattern per example per rollout). Eval mode: the plain MLP.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_hidden: int = 2,
                 p: float = 0.5) -> None:
        super().__init__(input_size, hidden_size, output_size, num_hidden, p,
                         lambda n_in, n_out, _: nn.Linear(n_in, n_out))
        self._masks: list[Tensor] | None = None
        self._generator: torch.Generator | None = None
        self._drawn = False

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Forget the masks; the next training forward draws new ones from ``generator``."""
        self._masks, self._generator, self._drawn = None, generator, True

    def _draw_masks(self, batch_shape: torch.Size, like: Tensor) -> list[Tensor]:
        device = self._generator.device if self._generator is not None else like.device
        shape = (len(self.layers) - 1, *batch_shape, self.layers[0].out_features)
        keep = torch.rand(shape, generator=self._generator, device=device) < 1.0 - self.p
        self._generator = None
        return list((keep.to(like.device, like.dtype) / (1.0 - self.p)).unbind(0))

    def features(self, x: Tensor) -> Tensor:
        """Last hidden layer, masked in training: ``[..., H]``."""
        if self.training and self.p > 0:
            if not self._drawn:
                raise RuntimeError("no dropout pattern drawn: call resample() before the rollout")
            if self._masks is None:
                self._masks = self._draw_masks(x.shape[:-1], x)
            elif self._masks[0].shape[:-1] != x.shape[:-1]:
                raise ValueError(f"batch shape changed within a rollout: masks for "
                                 f"{tuple(self._masks[0].shape[:-1])}, input {tuple(x.shape[:-1])}")
        for i, layer in enumerate(self.layers[:-1]):
            x = torch.relu(layer(x))
            if self.training and self.p > 0:
                x = x * self._masks[i]
        return x
