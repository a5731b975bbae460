"""``make_optimizer``: one entry point for the optimizers ``nram train --optimizer`` offers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from .dynamo_free import DynamoFreeSGD
from .native_adam import NativeAdam
from .random_bases import FixedProjectionDescent, RandomBasesDescent

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "rbd": RandomBasesDescent,
    "fpd": FixedProjectionDescent,
}
OPTIMIZER_NAMES: tuple[str, ...] = tuple(OPTIMIZERS)


def make_optimizer(name: str, params: Iterable[Any], *, native: bool = False, **kwargs: Any) -> Optimizer:
    """Build optimizer ``name`` over ``params`` with keyword arguments ``kwargs``.

    ``"sgd"`` and ``"adam"`` are torch's own classes, in their fused form unless ``fused=False``
    is passed (one kernel over all parameters: NRAM controllers have a few small tensors, so
    the per-tensor loop of the default form costs more than the arithmetic). With ``native``,
    for the one-call C training rollout, whose runs otherwise never import ``torch._dynamo``:
    ``"adam"`` is :class:`NativeAdam`, torch's Adam with its CPU update in one C call (it
    rounds differently from torch's kernel, so other paths keep torch's), and ``"sgd"`` is
    :class:`DynamoFreeSGD`, torch's SGD without the wrappers that import it. ``"rbd"`` is
    :class:`RandomBasesDescent`, ``"fpd"`` :class:`FixedProjectionDescent`. ``params`` is
    anything torch optimizers take: parameters, ``(name, parameter)`` pairs or param groups.
    For ``"rbd"``/``"fpd"`` with per-module compartments (their default) pass names::

        make_optimizer("rbd", model.named_parameters(), lr=1.0, dims=250)
        make_optimizer("rbd", model.parameters(), lr=1.0, compartments=module_compartments(model))

    Raises:
        ValueError: ``name`` is not one of :data:`OPTIMIZER_NAMES` (the message lists them).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZER_NAMES)}")
    if name in ("sgd", "adam"):
        kwargs.setdefault("fused", True)
    native_classes = {"adam": NativeAdam, "sgd": DynamoFreeSGD} if native else {}
    return native_classes.get(name, OPTIMIZERS[name])(params, **kwargs)
