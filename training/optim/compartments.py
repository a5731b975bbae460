"""Compartments: the blocks of the parameter vector that get their own random directions.

The optimizer's parameters, in param-group order, flattened and concatenated, form the vector
``theta [D]``. A compartment is a list of :class:`Piece` s of that vector (a whole parameter or
a contiguous run of one parameter's elements); its ``n`` columns are the pieces concatenated.
Every element of ``theta`` is in exactly one compartment, and the update is blockwise::

    theta_c -= lr / D * V_c^T V_c g_c        for every compartment c, V_c: [dims, n_c]

Ways to choose them (``compartments=`` of the optimizers):

- ``"global"``: one compartment, all of ``theta``;
- ``"module"``: one per module, the parameters a module owns directly. The module is read off
  the parameter's name (``"net.0.weight"`` -> ``"net.0"``), so the optimizer needs names: pass
  ``model.named_parameters()`` or param groups of ``(name, parameter)`` pairs;
- an ``int`` k: ``theta`` cut into k contiguous runs of ``D // k`` or ``D // k + 1`` elements
  (the longer ones first), regardless of parameter boundaries;
- a sequence of sequences of parameters, e.g. :func:`module_compartments` ``(model)``: one
  compartment per inner sequence, in that order, covering every parameter exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Union

from torch import Tensor, nn

CompartmentSpec = Union[str, int, Sequence[Sequence[Tensor]]]


class Piece(NamedTuple):
    """Elements ``[start, stop)`` of parameter ``param`` (flat view), at compartment column ``col``."""

    param: int
    start: int
    stop: int
    col: int


class Compartment(NamedTuple):
    """A named block of ``numel`` columns made of ``pieces`` in column order."""

    name: str
    numel: int
    pieces: tuple[Piece, ...]


class BlockPiece(NamedTuple):
    """Part of a column block: parameter elements ``[start, stop)`` are block columns ``[lo, hi)``."""

    param: int
    start: int
    stop: int
    lo: int
    hi: int


def module_compartments(model: nn.Module) -> list[list[nn.Parameter]]:
    """The parameters of ``model`` grouped by the module that owns them directly.

    One list per module (in ``model.modules()`` order) that owns parameters; a parameter shared
    by several modules goes with the first. Use as
    ``RandomBasesDescent(model.parameters(), ..., compartments=module_compartments(model))``.
    """
    seen: set[int] = set()
    groups = []
    for module in model.modules():
        params = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append(params)
    return groups


def _whole(name: str, indices: Sequence[int], params: Sequence[Tensor]) -> Compartment:
    pieces, col = [], 0
    for i in indices:
        pieces.append(Piece(i, 0, params[i].numel(), col))
        col += params[i].numel()
    return Compartment(name, col, tuple(pieces))


def _runs(k: int, params: Sequence[Tensor]) -> list[Compartment]:
    """``theta`` cut into ``k`` contiguous runs, lengths as :func:`torch.tensor_split`."""
    total = sum(p.numel() for p in params)
    base, extra = divmod(total, k)
    sizes = [base + 1] * extra + [base] * (k - extra)
    out, i, offset = [], 0, 0
    for c, size in enumerate(sizes):
        pieces, col = [], 0
        while col < size:
            take = min(size - col, params[i].numel() - offset)
            pieces.append(Piece(i, offset, offset + take, col))
            col += take
            offset += take
            if offset == params[i].numel():
                i, offset = i + 1, 0
        out.append(Compartment(f"run{c}", size, tuple(pieces)))
    return out


def resolve_compartments(spec: CompartmentSpec, params: Sequence[Tensor],
                         names: Sequence[str] | None) -> list[Compartment]:
    """Turn a ``compartments=`` argument into :class:`Compartment` s over ``params``.

    Compartments without elements (modules whose parameters are all empty) are dropped.

    Raises:
        ValueError: unknown mode, a bad count, ``"module"`` without names, or explicit
            compartments that do not partition ``params``.
    """
    return [c for c in _resolve(spec, params, names) if c.numel > 0]


def _resolve(spec: CompartmentSpec, params: Sequence[Tensor], names: Sequence[str] | None) -> list[Compartment]:
    if isinstance(spec, str):
        if spec == "global":
            return [_whole("global", range(len(params)), params)]
        if spec == "module":
            if names is None:
                raise ValueError("compartments='module' needs parameter names: pass model.named_parameters() "
                                 "(or param groups of (name, parameter) pairs), or pass "
                                 "compartments=module_compartments(model)")
            modules: dict[str, list[int]] = {}
            for i, name in enumerate(names):
                modules.setdefault(name.rpartition(".")[0], []).append(i)
            return [_whole(m, idx, params) for m, idx in modules.items()]
        raise ValueError(f"unknown compartment mode {spec!r}; valid: 'module', 'global', an int, "
                         "or a sequence of parameter lists")
    if isinstance(spec, int) and not isinstance(spec, bool):
        total = sum(p.numel() for p in params)
        if not 1 <= spec <= total:
            raise ValueError(f"compartments={spec} must be between 1 and the number of parameters ({total})")
        return _runs(spec, params)
    if isinstance(spec, Sequence) and all(isinstance(group, Sequence) for group in spec):
        index = {id(p): i for i, p in enumerate(params)}
        used = [index.get(id(p), -1) for group in spec for p in group]
        if -1 in used or sorted(used) != list(range(len(params))):
            raise ValueError("explicit compartments must contain every optimized parameter exactly once")
        return [_whole(f"group{c}", [index[id(p)] for p in group], params) for c, group in enumerate(spec)]
    raise ValueError(f"bad compartments={spec!r}: 'module', 'global', an int, or a sequence of parameter lists")


def column_blocks(compartment: Compartment, cols: int) -> list[tuple[BlockPiece, ...]]:
    """Cut a compartment's columns into blocks of ``cols``; each block as parameter slices."""
    blocks = []
    for lo in range(0, compartment.numel, cols):
        hi = min(lo + cols, compartment.numel)
        block = []
        for piece in compartment.pieces:
            width = piece.stop - piece.start
            a, b = max(lo, piece.col), min(hi, piece.col + width)
            if a < b:
                block.append(BlockPiece(piece.param, piece.start + a - piece.col, piece.start + b - piece.col,
                                        a - lo, b - lo))
        blocks.append(tuple(block))
    return blocks
