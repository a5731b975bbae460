"""``NativeAdam``: torch's Adam, its update on the CPU in one C call.

An NRAM controller has a handful of small tensors (about 20,000 numbers), and ``torch.optim.Adam``
spends most of its step in Python around its kernel (0.22 ms of a 1.8 ms training step of the
one-call C rollout, docs/speed.md). :class:`NativeAdam` is ``torch.optim.Adam`` (same arguments,
state and ``state_dict``, so checkpoints move freely between the two) whose ``step`` runs the
same update in one call of ``nram_adam`` (``nram/native_step.c``) where it can: CPU float32 or
float64 parameters that all have a contiguous gradient, no closure, no amsgrad, and none of
torch's capturable, differentiable or decoupled weight decay modes. Anywhere else it takes
torch's step. The update agrees with torch's to float rounding (``tests/test_native_adam.py``).

Its other calls, and torch's step where it takes it, skip the wrappers that import
``torch._dynamo`` (:class:`training.optim.dynamo_free.DynamoFreeOptimizer`): `nram train --task
access` took 8.3-8.6 s from start to exit before that and a lazy networkx import, 6.2-6.3 s after
(``docs/speed.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from nram import native
from nram.native_training import AdamUpdate

from .dynamo_free import DynamoFreeOptimizer

TORCH_ONLY_OPTIONS = ("amsgrad", "capturable", "differentiable", "decoupled_weight_decay")
"""Adam options that ``nram_adam`` does not implement: a group with any of them set takes torch's step."""


class _GroupPlan(NamedTuple):
    """One param group's C update, prepared once (:class:`AdamUpdate`), and its parameters'
    step counts: the state tensors and, to hand to C without reading them back, their values."""

    update: AdamUpdate
    steps: list[Tensor]
    counts: list[float]


class NativeAdam(DynamoFreeOptimizer, torch.optim.Adam):
    """``torch.optim.Adam`` whose update of CPU float parameters is one C call (:class:`AdamUpdate`)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's; the next step prepares its update again."""
        super().add_param_group(param_group)
        self._plans: list[_GroupPlan] | None = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's; the loaded state tensors replace the prepared ones."""
        super().load_state_dict(state_dict)
        self._plans = None

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Adam step over every parameter that has a gradient; returns ``closure()`` if given."""
        grads = [[p.grad for p in group["params"]] for group in self.param_groups]
        if closure is None and self._plans is None and all(g is not None for group_grads in grads for g in group_grads):
            self._plans = self._plan()
        if closure is not None or self._plans is None or not all(
                plan.update.accepts(group_grads) for plan, group_grads in zip(self._plans, grads)):
            self._plans = None  # torch's step may start state or advance only some step counts
            return super().step(closure)
        for plan, group, group_grads in zip(self._plans, self.param_groups, grads):
            plan.counts[:] = [count + 1 for count in plan.counts]
            beta1, beta2 = group["betas"]
            plan.update(group_grads, plan.counts, lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                        eps=group["eps"], weight_decay=group["weight_decay"], maximize=group["maximize"])
            for tensor, count in zip(plan.steps, plan.counts):
                tensor.fill_(count)
        return None

    def _plan(self) -> list[_GroupPlan] | None:
        """Every group's prepared update, starting the state of parameters that have none as torch
        does; None where some group needs torch's step (an option the C code lacks, parameters
        or moments that are not contiguous CPU tensors of one of the C code's float types)."""
        plans = []
        for group in self.param_groups:
            params = group["params"]
            if (not params or any(group.get(option) for option in TORCH_ONLY_OPTIONS)
                    or not native.usable(params[0], training=True)):
                return None
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=torch.zeros((), dtype=torch.float32),
                                         exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                                         exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
            states = [self.state[p] for p in params]
            try:
                update = AdamUpdate([p.detach() for p in params], [s["exp_avg"] for s in states],
                                    [s["exp_avg_sq"] for s in states])
            except ValueError:
                return None
            steps = [s["step"] for s in states]
            plans.append(_GroupPlan(update, steps, [float(count) for count in steps]))
        return plans
