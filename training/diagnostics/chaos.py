"""Edge of chaos (Zhang, Feng, Chen, Lai 2021): order parameters, phase, separation, Lyapunov.

**Order parameters** of a weight matrix ``W [out, N]`` with fan-in ``N``::

    J = std(W) sqrt(N),   J0 = mean(W) N          (population std over all entries)

**Mean field** of ``x_{t+1} = tanh(x_t W)`` with ``W_ij ~ N(J0 / N, J^2 / N)``: the fixed point
``(u, q)`` of ::

    u = E_z tanh(J0 u + J sqrt(q) z),   q = E_z tanh^2(J0 u + J sqrt(q) z),   z ~ N(0, 1)

and the stability of a small perturbation, ``lhs = J^2 E_z sech^4(J0 u + J sqrt(q) z)``:
ordered for ``lhs < 1``, chaotic for ``lhs > 1``, the edge at ``lhs = 1`` (J = 1 when J0 ~ 0).
Expectations use Gauss-Hermite quadrature; the fixed point is iterated from ``u = q = 1``.

**Two replicas**: iterate the map from ``x0`` and ``x0 + N(0, 1e-4^2)`` and watch the distance
(:func:`replica_separation`); **finite-time Lyapunov exponent** of any recurrence by
renormalised two-replica separation (Benettin) (:func:`lyapunov_exponent`). For ReLU or LSTM
controllers and the whole NRAM recurrence, these measurements replace the tanh mean field.

**Weight decay**: the growth ``Delta J^2 = c eta / ((1 - alpha) S)`` per SGD step balanced
against decay at ``J = 1`` gives ``lambda* ~ c / (k S)`` (:func:`recommended_weight_decay`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

PHASES: tuple[str, ...] = ("ordered", "edge", "chaotic")


def order_parameters(model: nn.Module) -> dict[str, tuple[float, float]]:
    """``{name: (J, J0)}`` for every weight matrix (every parameter with ``ndim >= 2``).

    ``W`` is viewed as ``[out, N]`` with ``N = prod(shape[1:])`` the fan-in (``in_features``
    of a Linear; an LSTM's ``weight_ih`` / ``weight_hh`` are taken whole). Frozen parameters
    are included. Computed in float64.
    """
    params = {}
    for name, weight in model.named_parameters():
        if weight.ndim >= 2:
            w = weight.detach().reshape(weight.shape[0], -1).double()
            fan_in = w.shape[1]
            params[name] = (w.std(correction=0) * math.sqrt(fan_in), w.mean() * fan_in)
    values = torch.stack([torch.stack(v) for v in params.values()]).tolist() if params else []
    return {name: (j, j0) for name, (j, j0) in zip(params, values)}


def log_order_parameters(writer, model: nn.Module, step: int) -> dict[str, tuple[float, float]]:
    """Write ``chaos/J/<name>`` and ``chaos/J0/<name>`` for every weight matrix of ``model`` to a
    ``torch.utils.tensorboard.SummaryWriter`` at ``step``; returns :func:`order_parameters`."""
    params = order_parameters(model)
    for name, (j, j0) in params.items():
        writer.add_scalar(f"chaos/J/{name}", j, step)
        writer.add_scalar(f"chaos/J0/{name}", j0, step)
    return params


@lru_cache(maxsize=8)
def _gauss_hermite(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal quadrature: ``E_z f(z) ~= sum_i w_i f(z_i)``."""
    x, w = np.polynomial.hermite.hermgauss(nodes)
    return x * math.sqrt(2.0), w / math.sqrt(math.pi)


def mean_field_fixed_point(J: float, J0: float = 0.0, *, nodes: int = 200, max_iter: int = 20000,
                           tol: float = 1e-14) -> tuple[float, float]:
    """The stable fixed point ``(u, q)`` of the tanh mean field (module docstring).

    Iterates from ``u = q = 1`` until ``|u|`` and ``q`` change by less than ``tol`` (``|u|``:
    for ``J0 < -1`` u flips sign every step, which leaves ``q`` and the lhs unchanged). At the
    critical point itself convergence is slow (``q_t ~ 1 / (2t)``): after ``max_iter`` steps
    the lhs there is within ``1 / max_iter`` of its limit.
    """
    z, w = _gauss_hermite(nodes)
    u, q = 1.0, 1.0
    for _ in range(max_iter):
        t = np.tanh(J0 * u + J * math.sqrt(q) * z)
        u_new, q_new = float(w @ t), float(w @ (t * t))
        converged = abs(abs(u_new) - abs(u)) < tol and abs(q_new - q) < tol
        u, q = u_new, q_new
        if converged:
            break
    return u, q


def mean_field_lhs(J: float, J0: float = 0.0, *, nodes: int = 200, max_iter: int = 20000) -> float:
    """``J^2 E_z sech^4(J0 u + J sqrt(q) z)`` at the mean-field fixed point; 1 on the edge of chaos.

    Gauss-Hermite with ``nodes`` points is accurate to ~1e-6 while ``J sqrt(q) <= 2`` (all
    of the region near the edge); for very large ``J`` (``J sqrt(q) ~ 10``) the sharp
    integrand costs ~1e-2, where the phase is far from ambiguous.
    """
    u, q = mean_field_fixed_point(J, J0, nodes=nodes, max_iter=max_iter)
    z, w = _gauss_hermite(nodes)
    sech2 = 1.0 - np.tanh(J0 * u + J * math.sqrt(q) * z) ** 2
    return J * J * float(w @ (sech2 * sech2))


def phase(J: float, J0: float = 0.0, *, tol: float = 0.05) -> str:
    """``"ordered"`` (lhs < 1 - tol), ``"edge"`` (|lhs - 1| < tol) or ``"chaotic"`` (lhs > 1 + tol).

    lhs from :func:`mean_field_lhs`. At ``J0 = 0``, lhs = J^2 for J <= 1 and grows slowly above
    (1.01 at J = 1.1, 1.14 at J = 1.5), so the default edge band is about 0.975 < J < 1.256.
    """
    lhs = mean_field_lhs(J, J0)
    if abs(lhs - 1.0) < tol:
        return "edge"
    return "ordered" if lhs < 1.0 else "chaotic"


def replica_separation(J: float, J0: float = 0.0, N: int = 2000, steps: int = 500, *,
                       perturbation: float = 1e-4, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> float:
    """Two-replica phase test of ``x_{t+1} = tanh(x_t W)``, ``W [N, N] ~ N(J0 / N, J^2 / N)``.

    ``x0 ~ U(-1, 1)^N`` and ``x0' = x0 + N(0, perturbation^2)`` are iterated together (one
    ``[2, N] @ [N, N]`` matmul per step); returns the mean over the last fifth of the steps of
    the RMS distance ``sqrt(mean_i (x_i - x'_i)^2)``: ~0 (< 1e-4) ordered, O(1) chaotic.
    Random numbers come from ``generator``, on its device (else on ``device``). Entries below ``tiny / eps`` of the
    dtype (1e-31 in float32) are set to 0 after each step: they vanish in any sum with a
    normal number, and an ordered run would otherwise crawl through subnormal arithmetic.
    """
    device = generator.device if generator is not None else torch.device(device or "cpu")
    weight = torch.randn(N, N, generator=generator, device=device, dtype=dtype) * (J / math.sqrt(N)) + J0 / N
    x0 = torch.rand(N, generator=generator, device=device, dtype=dtype) * 2 - 1
    x = torch.stack([x0, x0 + perturbation * torch.randn(N, generator=generator, device=device, dtype=dtype)])
    negligible = torch.finfo(dtype).tiny / torch.finfo(dtype).eps
    tail = steps - steps // 5
    distances = []
    for t in range(steps):
        x = torch.tanh(x @ weight)
        x = torch.where(x.abs() < negligible, 0.0, x)
        if t >= tail:
            distances.append((x[0] - x[1]).square().mean().sqrt())
    return torch.stack(distances).double().mean().item()


State = Tensor | None | Sequence["State"]
"""A recurrent state: a floating tensor, None (e.g. a stateless controller's), or a (named)
tuple / list of states."""


def _flatten(state: State) -> list[Tensor]:
    if state is None:
        return []
    if isinstance(state, Tensor):
        if not state.is_floating_point():
            raise TypeError(f"lyapunov_exponent needs floating state tensors, got {state.dtype}")
        return [state]
    return [t for child in state for t in _flatten(child)]


def _unflatten(template: State, tensors: list[Tensor]) -> State:
    """Rebuild the structure of ``template`` from ``tensors`` (consumed from the front)."""
    if template is None:
        return None
    if isinstance(template, Tensor):
        return tensors.pop(0)
    children = [_unflatten(child, tensors) for child in template]
    return type(template)(*children) if hasattr(template, "_fields") else type(template)(children)


@torch.no_grad()
def lyapunov_exponent(step_fn: Callable[[State], State], state0: State, steps: int, eps: float = 1e-6,
                      generator: torch.Generator | None = None, *, warmup: int = 0) -> float:
    """Largest finite-time Lyapunov exponent of ``x_{t+1} = step_fn(x_t)``, per step (Benettin).

    A reference ``x`` and a replica ``y = x + eps d`` (``d`` a random unit direction over all
    state tensors together, from ``generator``) are stepped together; after each step the
    separation ``r_t = ||y_t - x_t||`` (Euclidean over the whole state) is measured and ``y``
    is pulled back to distance ``eps`` along it. Returns
    ``lambda = (1 / steps) sum_t log(r_t / eps)`` over the ``steps`` steps after ``warmup``
    discarded ones: ``log|a|`` for ``x -> a x``, < 0 ordered, > 0 chaotic.

    ``state0``: a floating tensor or a (named) tuple / list of them and None (e.g. an NRAM
    ``(MachineState, controller_state)``); ``step_fn`` must return the same structure;
    ``generator`` must live on the state's device. A batched state is one big system: the
    estimate tends to the largest exponent among the examples. ``eps`` is absolute: keep it
    well above the dtype's resolution at the state's scale (e.g. 1e-6 for O(1) states in
    float64, ~1e-3 in float32). Returns ``-inf`` if the replicas merge exactly.
    """
    x = _flatten(state0)
    if not x:
        raise ValueError("state0 holds no tensor")
    direction = [torch.randn(t.shape, generator=generator, dtype=t.dtype, device=t.device) for t in x]
    norm = torch.stack([d.double().square().sum() for d in direction]).sum().sqrt()
    y = [t + d * (eps / norm).to(t.dtype) for t, d in zip(x, direction)]
    log_growth = torch.zeros((), dtype=torch.float64, device=x[0].device)
    for t in range(warmup + steps):
        x = _flatten(step_fn(_unflatten(state0, list(x))))
        y = _flatten(step_fn(_unflatten(state0, list(y))))
        diff = [b - a for a, b in zip(x, y)]
        r = torch.stack([d.double().square().sum() for d in diff]).sum().sqrt()
        if t >= warmup:
            log_growth = log_growth + torch.log(r / eps)
        scale = torch.where(r > 0, eps / r, 0.0)  # merged replicas stay merged: log r = -inf
        y = [a + d * scale.to(d.dtype) for a, d in zip(x, diff)]
    return log_growth.item() / steps


def j2_slope(J_trajectory: Sequence[float], step_interval: float = 1.0) -> float:
    """Least-squares slope ``a`` of ``J^2`` per optimizer step (``J^2(t) = a t + C``, ordered phase).

    ``J_trajectory[i]`` was measured at step ``i * step_interval``.
    """
    j2 = np.asarray(J_trajectory, dtype=np.float64) ** 2
    if j2.size < 2:
        raise ValueError("need at least two J measurements")
    steps = np.arange(j2.size) * step_interval
    return float(np.polyfit(steps, j2, 1)[0])


def recommended_weight_decay(j2_growth_per_step: float, lr: float, momentum: float = 0.0) -> dict[str, float]:
    """Weight decay that holds ``J`` at 1: ``{"k=4": lambda, "k=2": lambda}``.

    The paper: per SGD step ``Delta J^2 = a = c eta / ((1 - alpha) S)`` (``eta`` = ``lr``,
    ``alpha`` = ``momentum``, ``S`` the training-set size, ``c ~ 11.1`` on Fashion-MNIST) and the
    balance against decay at ``J = 1`` gives ``lambda* ~ c / (k S) = (1 - alpha) a / (k eta)``.
    Its derivation gives ``k = 4``; ``k = 2`` (what ``2 eta lambda J^2 / (1 - alpha) = a``, the
    decay of ``J^2`` by ``W <- (1 - eta lambda / (1 - alpha)) W``, gives) matched the paper's
    best sweep value (9e-5 against 9.25e-5). The factor is unconfirmed: both are returned.
    ``a`` comes from a run without decay (:func:`j2_slope`); NRAM samples fresh data every
    step, so ``a`` replaces ``c / S``. Derived for SGD with momentum (with AdamW's decoupled
    decay use ``momentum=0``); for Adam with L2 it is a starting point for a sweep only.
    """
    if lr <= 0 or not 0 <= momentum < 1:
        raise ValueError(f"need lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")
    base = (1.0 - momentum) * j2_growth_per_step / lr
    return {"k=4": base / 4.0, "k=2": base / 2.0}


LINE_STYLES = ("-", "--", "-.", ":")
"""One per weight decay in the trajectory panel, so runs of equal final J stay apart."""


def plot_phase_diagram(records: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Draw the learning-rate x weight-decay phase diagram of a sweep and write it as PNG.

    ``records``: one dict per run with ``"lr"``, ``"weight_decay"``, ``"J_trajectory"``
    (``[float]``, J measured along training) and ``"final_loss"``; optional ``"steps"`` (the
    optimizer step of each J, default ``0, 1, ...``) and ``"J0"`` (final J0, default 0).
    Left: one cell per (lr, weight decay), coloured by the final J (blue ordered, white
    J = 1, red chaotic; runs sharing a cell averaged), labelled with J, the mean-field phase
    and the final loss; the lowest loss among cells at the edge is boxed. Right: every J
    trajectory, same colours, one line style per weight decay, each run in the legend.
    """
    # Imported here so that the rest of the package does not pay for matplotlib. A bare
    # Figure renders with the Agg canvas and leaves pyplot's global backend alone.
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if not records:
        raise ValueError("no records to plot")
    lrs = sorted({float(r["lr"]) for r in records})
    decays = sorted({float(r["weight_decay"]) for r in records})
    final_j = np.array([float(r["J_trajectory"][-1]) for r in records])
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(final_j.min(), 0.9), vmax=max(final_j.max(), 1.1))
    cmap = colormaps["coolwarm"]

    grid_j = np.full((len(decays), len(lrs)), np.nan)
    grid_loss = np.full_like(grid_j, np.nan)
    grid_j0 = np.zeros_like(grid_j)
    for row, decay in enumerate(decays):
        for col, lr in enumerate(lrs):
            cell = [i for i, r in enumerate(records)
                    if float(r["lr"]) == lr and float(r["weight_decay"]) == decay]
            if cell:
                grid_j[row, col] = final_j[cell].mean()
                grid_loss[row, col] = np.mean([float(records[i]["final_loss"]) for i in cell])
                grid_j0[row, col] = np.mean([float(records[i].get("J0", 0.0)) for i in cell])

    fig = Figure(figsize=(13, 5.5), layout="tight")
    ax_grid, ax_traj = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    image = ax_grid.imshow(grid_j, cmap=cmap, norm=norm, origin="lower", aspect="auto")
    for row in range(len(decays)):
        for col in range(len(lrs)):
            if not np.isnan(grid_j[row, col]):
                label = phase(grid_j[row, col], grid_j0[row, col])
                dark = abs(norm(grid_j[row, col]) - 0.5) > 0.35
                ax_grid.text(col, row, f"J={grid_j[row, col]:.2f}\n{label}\nloss {grid_loss[row, col]:.3g}",
                             ha="center", va="center", fontsize=8, color="white" if dark else "black")
    edge = np.array([[not np.isnan(j) and phase(j, j0) == "edge" for j, j0 in zip(row_j, row_j0)]
                     for row_j, row_j0 in zip(grid_j, grid_j0)])
    if edge.any():
        edge_loss = np.where(edge, grid_loss, np.nan)
        best_row, best_col = np.unravel_index(np.nanargmin(edge_loss), grid_loss.shape)
        ax_grid.add_patch(Rectangle((best_col - 0.5, best_row - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
    ax_grid.set_xticks(range(len(lrs)), [f"{v:.3g}" for v in lrs])
    ax_grid.set_yticks(range(len(decays)), [f"{v:.3g}" for v in decays])
    ax_grid.set_xlabel("learning rate")
    ax_grid.set_ylabel("weight decay")
    ax_grid.set_title("final J (box: lowest loss at the edge)")
    fig.colorbar(image, ax=ax_grid, label="final J  (<1 ordered, >1 chaotic)")

    for record, j_end in zip(records, final_j):
        trajectory = np.asarray(record["J_trajectory"], dtype=np.float64)
        steps = np.asarray(record.get("steps", np.arange(trajectory.size)), dtype=np.float64)
        label = f"lr {float(record['lr']):.3g}, wd {float(record['weight_decay']):.3g}"
        decay_index = decays.index(float(record["weight_decay"]))
        ax_traj.plot(steps, trajectory, color=cmap(norm(j_end)), lw=1.3, label=label,
                     linestyle=LINE_STYLES[decay_index % len(LINE_STYLES)])
    ax_traj.axhline(1.0, color="black", ls="--", lw=1, label="edge of chaos (J = 1)")
    ax_traj.set_xlabel("optimizer step")
    ax_traj.set_ylabel("J")
    ax_traj.set_title("J during training (colour: final J; line style: weight decay)")
    ax_traj.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + len(records) // 14)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
