"""Adam and SGD over a population's parameters: leading member axis ``[P, ...]``, one member each.

Each member has its own learning rate and weight decay (tensors ``[P]`` in the param group)
and its own step count, and can be skipped (``step(active=...)``), reset to a fresh state
(:meth:`reset_member`, a restart) or given another member's state (:meth:`copy_member`,
exploitation in population-based training). Per member the arithmetic is that of
``torch.optim.Adam`` / ``torch.optim.SGD`` (L2 weight decay, no dampening, no Nesterov), and
:meth:`member_state` gives a member's state in those classes' ``state`` format, so a member
becomes an ordinary run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class _MemberOptimizer(torch.optim.Optimizer):
    """What both optimizers share: per-member hyperparameters and step counts (``[P]`` tensors in
    the param group), skipping, reset and copy. Each update is a few ``torch._foreach`` calls over
    all parameters, with the per-member factors broadcast along the member axis."""

    slots: tuple[str, ...] = ()
    """Names of the per-parameter state tensors ``[P, ...]``."""

    def __init__(self, params: Iterable[Tensor], lr: Tensor, weight_decay: Tensor, **defaults: Any):
        lr = torch.as_tensor(lr, dtype=torch.float64).flatten().clone()
        weight_decay = torch.as_tensor(weight_decay, dtype=torch.float64).flatten().expand(lr.numel()).clone()
        if not bool((lr > 0).all()) or not bool((weight_decay >= 0).all()):
            raise ValueError("every member needs lr > 0 and weight_decay >= 0")
        self.size = lr.numel()
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, step=torch.zeros(self.size, dtype=torch.float64),
                                      **defaults))
        for group in self.param_groups:
            for p in group["params"]:
                if p.shape[0] != self.size:
                    raise ValueError(f"parameter of shape {tuple(p.shape)} has no member axis of size {self.size}")

    def _slots(self, params: list[Tensor]) -> list[list[Tensor]]:
        """Each slot's state tensors for ``params``, created as zeros on first use."""
        for p in params:
            if not self.state[p]:
                self.state[p].update({name: torch.zeros_like(p) for name in self.slots})
        return [[self.state[p][name] for p in params] for name in self.slots]

    @torch.no_grad()
    def step(self, closure: None = None, active: Tensor | None = None) -> None:
        """Update every member, or only those where ``active`` ``[P]`` is true (the others keep
        their weights, state and step count). No closure: the loss is computed outside."""
        if closure is not None:
            raise ValueError("member optimizers take no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            slots = self._slots(params)
            if active is None or bool(active.all()):
                group["step"] += 1
                self._update(params, slots, group)
                continue
            active = active.to(params[0].device)
            kept = [p[~active].clone() for p in params]
            kept_slots = [[t[~active].clone() for t in slot] for slot in slots]
            group["step"] += active.to(group["step"])
            self._update(params, slots, group)
            for p, value in zip(params, kept):
                p[~active] = value
            for slot, values in zip(slots, kept_slots):
                for t, value in zip(slot, values):
                    t[~active] = value

    def _update(self, params: list[Tensor], slots: list[list[Tensor]], group: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def _broadcast(values: Tensor, params: list[Tensor]) -> list[Tensor]:
        """``[P]`` factors shaped ``[P, 1, ..., 1]`` for each parameter, in its dtype and device."""
        return [values.to(p).view(-1, *([1] * (p.dim() - 1))) for p in params]

    def _gradients(self, params: list[Tensor], group: dict[str, Any]) -> list[Tensor]:
        grads = [p.grad for p in params]
        decay = group["weight_decay"]
        if not bool(decay.any()):
            return grads
        return torch._foreach_add(grads, torch._foreach_mul(params, self._broadcast(decay, params)))

    @torch.no_grad()
    def reset_member(self, index: int) -> None:
        """Member ``index`` starts afresh: step 0, zero state (as a newly built optimizer)."""
        for group in self.param_groups:
            group["step"][index] = 0
        for state in self.state.values():
            for name in self.slots:
                state[name][index] = 0

    @torch.no_grad()
    def copy_member(self, source: int, target: int) -> None:
        """Member ``target`` takes ``source``'s state and step count (not its hyperparameters)."""
        for group in self.param_groups:
            group["step"][target] = group["step"][source]
        for state in self.state.values():
            for name in self.slots:
                state[name][target] = state[name][source]

    def member_state(self, index: int) -> dict[int, dict[str, Tensor]]:
        """Member ``index``'s state in the single-model class's ``state_dict()["state"]`` format."""
        out, position = {}, 0
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and group["step"][index] > 0:
                    out[position] = self._single_state(state, group, index)
                position += 1
        return out

    def _single_state(self, state: dict[str, Tensor], group: dict[str, Any], index: int) -> dict[str, Tensor]:
        raise NotImplementedError


class MemberAdam(_MemberOptimizer):
    """Adam (Kingma & Ba 2015), member by member; see the module docstring."""

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Iterable[Tensor], lr: Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: Tensor | float = 0.0):
        super().__init__(params, lr, weight_decay, betas=betas, eps=eps)

    def _update(self, params: list[Tensor], slots: list[list[Tensor]], group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = slots
        grads = self._gradients(params, group)
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        step = group["step"].clamp_min(1)  # a skipped member's factors are computed but not applied
        step_size = self._broadcast(-group["lr"] / (1 - beta1 ** step), params)
        correction2 = self._broadcast((1 - beta2 ** step) ** 0.5, params)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, correction2)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, torch._foreach_mul(exp_avg, step_size), denom)

    def _single_state(self, state: dict[str, Tensor], group: dict[str, Any], index: int) -> dict[str, Tensor]:
        return {"step": group["step"][index].float().clone(), "exp_avg": state["exp_avg"][index].clone(),
                "exp_avg_sq": state["exp_avg_sq"][index].clone()}


class MemberSGD(_MemberOptimizer):
    """SGD with momentum (torch's form: ``buf = momentum * buf + g``, ``p -= lr * buf``), member by member."""

    slots = ("momentum_buffer",)

    def __init__(self, params: Iterable[Tensor], lr: Tensor, momentum: float = 0.0,
                 weight_decay: Tensor | float = 0.0):
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        super().__init__(params, lr, weight_decay, momentum=momentum)

    def _update(self, params: list[Tensor], slots: list[list[Tensor]], group: dict[str, Any]) -> None:
        directions = self._gradients(params, group)
        if group["momentum"]:
            (buffers,) = slots
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, directions)
            directions = buffers
        torch._foreach_add_(params, torch._foreach_mul(directions, self._broadcast(-group["lr"], params)))

    def _single_state(self, state: dict[str, Tensor], group: dict[str, Any], index: int) -> dict[str, Tensor]:
        return {"momentum_buffer": state["momentum_buffer"][index].clone()}


MEMBER_OPTIMIZERS = {"adam": MemberAdam, "sgd": MemberSGD}
