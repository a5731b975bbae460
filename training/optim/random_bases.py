"""Random-bases descent (Gressmann, Eaton-Rosen, Luschi 2020) and fixed-projection descent.

After backprop, with ``g [D]`` the gradient of all D parameters (flattened in param-group
order), every compartment ``c`` (see :mod:`training.optim.compartments`) projects its part
``g_c [n_c]`` on ``dims`` random directions and steps along the projection::

    coefficients   a_c = V_c g_c / sqrt(D)                          [dims]
    update         theta_c -= lr * V_c^T a_c / sqrt(D)  = lr / D * V_c^T V_c g_c

``V_c [dims, n_c]`` has i.i.d. zero-mean, unit-variance entries (normal, uniform or
Rademacher, :mod:`training.optim.directions`), so each direction ``v_i = V_c[i] / sqrt(D)``
has entries of variance ``1/D``, with ``D`` the total number of parameters in the optimizer
(all compartments together), as in the paper. ``E[V_c^T V_c] = dims * I``: the expected
update is ``lr * dims / D * g``, hence the larger learning rates than SGD's.

``RandomBasesDescent`` draws new directions at every step; ``FixedProjectionDescent`` keeps
the step-0 directions for the whole run (gradient descent on ``z`` in ``theta = theta0 + P z``,
Li et al. 2018).

Memory: ``V_c`` is never stored. It is generated chunk by chunk (at most ``chunk_size``
entries, one reused buffer) from counter-based seeds. When a chunk holds whole rows, it is
used at once for its coefficients and its share of the update (one draw per chunk); when a
row spans several chunks, the coefficients take a first pass and the update a second one that
regenerates the same chunks. Extra memory: one chunk plus ``dims x compartments``
coefficients, whatever ``dims``.

Distributed: with ``torch.distributed`` initialised, worker ``w`` of W projects its own
gradient ``g^w`` on its own directions ``V^w`` (``w`` in the seeds), all-gathers only the
coefficients, and applies ``theta -= lr / (D W) * sum_w V^w^T V^w g^w`` by regenerating every
worker's directions; all workers end with identical parameters. Do not wrap the model in
DistributedDataParallel: each worker's own gradient is what gets projected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from .compartments import BlockPiece, Compartment, CompartmentSpec, column_blocks, resolve_compartments
from .directions import DISTRIBUTIONS, chunk_grid, chunk_seed, fill_directions
from .distributed import all_gather_coefficients, world


class _Layout:
    """One compartment's chunk grid: ``rows x width`` chunks, ``blocks`` of columns."""

    def __init__(self, compartment: Compartment, dims: int, chunk_size: int) -> None:
        self.rows, cols = chunk_grid(dims, compartment.numel, chunk_size)
        self.blocks: list[tuple[BlockPiece, ...]] = column_blocks(compartment, cols)
        self.widths = [block[-1].hi for block in self.blocks]


class RandomBasesDescent(Optimizer):
    """Gradient descent along ``dims`` random directions per compartment, redrawn every step.

    Args:
        params: parameters, ``(name, parameter)`` pairs (e.g. ``model.named_parameters()``),
            or param groups of either; all on one device, one floating dtype, contiguous.
        lr: learning rate (per param group; schedulers may change it).
        dims: directions per compartment (the paper's d, 250 by default).
        compartments: ``"module"`` (needs names), ``"global"``, an int, or explicit lists of
            parameters; see :mod:`training.optim.compartments`.
        distribution: ``"normal"``, ``"uniform"`` or ``"bernoulli"`` entries, unit variance.
        seed: seed of every direction; kept in ``state`` so a loaded ``state_dict`` wins.
        chunk_size: most direction entries generated at once (the extra memory); part of the
            stream, so changing it changes the directions.
        process_group: group to all-gather coefficients over (default: the world).

    ``state[p]`` holds ``{"step": int, "seed": int}`` for every parameter (the same for all):
    the directions of step ``s`` derive from ``(seed, s)``, so ``state_dict`` round trips
    resume bit for bit. A parameter with ``requires_grad=False`` is frozen: its gradient
    counts as zero and it does not move (it still counts in D: leave it out of the optimizer
    to keep it out of D). A trainable parameter whose ``.grad`` is None counts as a zero
    gradient but still moves along the directions, so that every worker of a distributed run
    applies the same update whatever its own batch touched.
    """

    _fixed_basis = False

    def __init__(self, params: Iterable[Any], lr: float = 1.0, dims: int = 250,
                 compartments: CompartmentSpec = "module", distribution: str = "normal", seed: int = 0,
                 chunk_size: int = 1 << 22, process_group: dist.ProcessGroup | None = None) -> None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0.0:
            raise ValueError(f"lr must be a number >= 0, got {lr!r}")
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ValueError(f"dims must be an int >= 1, got {dims!r}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {distribution!r}; valid: {', '.join(DISTRIBUTIONS)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        super().__init__(params, {"lr": lr})
        self.dims, self.distribution, self.chunk_size = dims, distribution, chunk_size
        self.process_group = process_group
        self._params: list[Tensor] = [p for group in self.param_groups for p in group["params"]]
        self._group_of: list[int] = [i for i, group in enumerate(self.param_groups) for _ in group["params"]]
        first = self._params[0]
        for p in self._params:
            if p.device != first.device or p.dtype != first.dtype or not p.is_floating_point():
                raise ValueError("all parameters must share one device and one floating dtype")
            if not p.is_contiguous():
                raise ValueError("parameters must be contiguous")
        names = [n for group in self.param_groups for n in group.get("param_names", ())] or None
        self.compartments: list[Compartment] = resolve_compartments(compartments, self._params, names)
        self.num_params: int = sum(p.numel() for p in self._params)
        self._layouts = [_Layout(c, dims, chunk_size) for c in self.compartments]
        for p in self._params:
            self.state[p] = {"step": 0, "seed": seed}

    def __getstate__(self) -> dict[str, Any]:
        """All attributes, for copy and pickle (torch keeps only defaults, state and groups)."""
        return self.__dict__.copy()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Param groups are fixed once built: D and the compartments depend on them."""
        if hasattr(self, "_layouts"):
            raise ValueError(f"{type(self).__name__} cannot take new param groups after construction")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One update from the current ``.grad`` s (see the module docstring for the math)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        counters = self.state[self._params[0]]
        step, seed = counters["step"], counters["seed"]
        key = (seed, 0 if self._fixed_basis else step)
        grads = [self._flat_grad(p) for p in self._params]
        first = self._params[0]
        buffer = torch.empty(max(lay.rows * max(lay.widths) for lay in self._layouts),
                             dtype=first.dtype, device=first.device)
        generator = torch.Generator(device=first.device)
        rank, size = world(self.process_group)
        if size == 1:
            for ci, lay in enumerate(self._layouts):
                for r0 in range(0, self.dims, lay.rows):
                    c = self._coefficients(key, ci, r0, 0, grads, buffer, generator)
                    self._apply(key, ci, r0, 0, c, 1.0, len(lay.blocks) > 1, buffer, generator)
        else:
            parts = [self._coefficients(key, ci, r0, rank, grads, buffer, generator)
                     for ci, lay in enumerate(self._layouts) for r0 in range(0, self.dims, lay.rows)]
            gathered = all_gather_coefficients(torch.cat(parts), self.process_group)
            for w in range(size):
                offset = 0
                for ci, lay in enumerate(self._layouts):
                    for r0 in range(0, self.dims, lay.rows):
                        n = min(lay.rows, self.dims - r0)
                        c = gathered[w, offset:offset + n]
                        self._apply(key, ci, r0, w, c, 1.0 / size, True, buffer, generator)
                        offset += n
        for p in self._params:
            self.state[p]["step"] = step + 1
        return loss

    @staticmethod
    def _flat_grad(p: Tensor) -> Tensor | None:
        if p.grad is None or not p.requires_grad:
            return None
        if p.grad.is_sparse:
            raise RuntimeError("RandomBasesDescent does not support sparse gradients")
        return p.grad.reshape(-1)

    def _chunk(self, key: tuple[int, int], ci: int, r0: int, b: int, worker: int, buffer: Tensor,
               generator: torch.Generator) -> Tensor:
        """Chunk (row block at ``r0``, column block ``b``) of compartment ``ci``: ``[rows, width]``."""
        lay = self._layouts[ci]
        rows, width = min(lay.rows, self.dims - r0), lay.widths[b]
        index = (r0 // lay.rows) * len(lay.blocks) + b
        out = buffer[:rows * width].view(rows, width)
        return fill_directions(out, chunk_seed(key[0], key[1], ci, index, worker), self.distribution, generator)

    def _coefficients(self, key: tuple[int, int], ci: int, r0: int, worker: int, grads: list[Tensor | None],
                      buffer: Tensor, generator: torch.Generator) -> Tensor:
        """``V[r0:r0+rows] g_c`` (unscaled) for one row block: ``[rows]``.

        Leaves the row block's last chunk in ``buffer``.
        """
        lay = self._layouts[ci]
        c = buffer.new_zeros(min(lay.rows, self.dims - r0))
        for b, block in enumerate(lay.blocks):
            v = self._chunk(key, ci, r0, b, worker, buffer, generator)
            for piece in block:
                g = grads[piece.param]
                if g is not None:
                    c.addmv_(v[:, piece.lo:piece.hi], g[piece.start:piece.stop])
        return c

    def _apply(self, key: tuple[int, int], ci: int, r0: int, worker: int, c: Tensor, scale: float,
               regenerate: bool, buffer: Tensor, generator: torch.Generator) -> None:
        """``theta_c -= lr * scale / D * V[r0:r0+rows]^T c``, one row block of worker ``worker``.

        Frozen parameters (``requires_grad=False``) are not moved. With ``regenerate=False``
        the single chunk of the row block is taken from ``buffer``.
        """
        lay = self._layouts[ci]
        for b, block in enumerate(lay.blocks):
            if regenerate:
                v = self._chunk(key, ci, r0, b, worker, buffer, generator)
            else:
                v = buffer[:c.numel() * lay.widths[b]].view(c.numel(), lay.widths[b])
            for piece in block:
                param = self._params[piece.param]
                if not param.requires_grad:
                    continue
                lr = self.param_groups[self._group_of[piece.param]]["lr"]
                param.view(-1)[piece.start:piece.stop].addmv_(v[:, piece.lo:piece.hi].T, c,
                                                              alpha=-lr * scale / self.num_params)


class FixedProjectionDescent(RandomBasesDescent):
    """Descent in one random subspace fixed for the whole run (Li et al. 2018's baseline).

    The same as :class:`RandomBasesDescent` (same arguments, same math) except that the
    directions of every step are those of step 0: ``theta = theta0 + P z`` trained by SGD on
    ``z``, with ``P`` regenerated from the seed instead of stored.
    """

    _fixed_basis = True
