"""Torch's optimizers without the wrappers that import ``torch._dynamo`` (about 2 s at start-up).

Torch wraps ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict``
in ``torch._disable_dynamo``, and ``SGD.step`` and ``Adam.step`` in
``_use_grad_for_differentiable``; each wrapper imports ``torch._dynamo`` on its first call. Outside
``torch.compile`` the first set only forwards the call and the second only sets the grad mode
(to the optimizer's ``differentiable`` option). An NRAM run never compiles its optimizer, so
:class:`DynamoFreeOptimizer` calls the wrapped functions themselves (``inspect.unwrap``), under
that grad mode: the same update, state and ``state_dict``. It is what lets `nram train --task
access` exit in about 6 s rather than 8 (``docs/speed.md``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch


class DynamoFreeOptimizer(torch.optim.Optimizer):
    """Mixin before a torch optimizer class (``class X(DynamoFreeOptimizer, torch.optim.SGD)``):
    the same optimizer, its calls made without importing ``torch._dynamo`` (module docstring).
    Each method calls the next class's own (``super()``), unwrapped."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's."""
        inspect.unwrap(super().add_param_group.__func__)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's."""
        inspect.unwrap(super().zero_grad.__func__)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """As torch's."""
        return inspect.unwrap(super().state_dict.__func__)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's."""
        inspect.unwrap(super().load_state_dict.__func__)(self, state_dict)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """The torch class's step, under the grad mode its wrapper sets."""
        torch_step = inspect.unwrap(super().step.__func__)
        with torch.set_grad_enabled(self.defaults.get("differentiable", False)):
            return torch_step(self, closure)


class DynamoFreeSGD(DynamoFreeOptimizer, torch.optim.SGD):
    """``torch.optim.SGD`` (same arguments, update and state), its calls made without ``torch._dynamo``."""
