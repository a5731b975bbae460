"""The NRAM: controller + machine unrolled for T steps, its stop distribution and its loss.

At every timestep t the controller reads ``P(r_i = 0)``, emits choice logits and a stop logit;
the choices run one machine step (:func:`nram.machine.machine_step`) and ``f_t =
sigmoid(stop logit)`` is the probability of stopping after it. The output memory is the
mixture of the memories after each step, weighted by

    p_t = f_t prod_{i<t} (1 - f_i)  for t < T,     p_T = 1 - sum_{t<T} p_t,

and the loss is ``-sum_t p_t sum_{i in mask} log clamp(memories[t, i, target_i], eps)``,
averaged over the batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nram import native, native_inference, native_training
from nram.circuit import CircuitLayout, readout_with_blank, spread_logits
from nram.controller import MLPController, make_controller
from nram.gates import GATE_NAMES
from nram.machine import choice_weights, constant_values, initial_registers, one_hot_cells, step_values

CPU_SLICE_BYTES = 1 << 20
"""In eval mode on the CPU, :meth:`NRAM.output_memory` runs the batch in slices whose memory takes
about this many bytes (1 MiB, a core's L2 cache), so every intermediate stays in the cache: 3.3x
faster at M = 64 and 1.9x at M = 32 (batch 4096), side by side with one slice (docs/speed.md)."""


@dataclass
class MachineConfig:
    """Everything that fixes an NRAM's architecture (but not its memory size)."""

    num_registers: int = 4
    """R, the number of registers the controller can see and write."""
    gates: tuple[str, ...] = GATE_NAMES
    """The gates, a subset of GATE_NAMES in paper order."""
    controller: str = "mlp"
    """Controller kind: "mlp" (2 hidden ReLU layers), "lstm" or "gated" (deep gated network)."""
    hidden_size: int = 64
    """Width of the controller's hidden layers."""
    dropout: str = "none"
    """Dropout in the mlp controller: "none", "batchwise" (one pattern per rollout) or "samplewise"."""
    dropout_p: float = 0.5
    """Dropout rate."""
    controller_options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the controller, e.g. {"gating": "soft", "beta": 4.0} for "gated"."""

    def __post_init__(self) -> None:
        self.gates = tuple(self.gates)
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {self.hidden_size}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain Python types (gates as a list), e.g. for a checkpoint."""
        out = asdict(self)
        out["gates"] = list(self.gates)
        return out


class Rollout(NamedTuple):
    """A soft run: memories after each step ``[T, B, M, M]``, stop probabilities ``p_t`` ``[T, B]``,
    and, when asked for, the mean entropy of the controller's choices at each step ``[T, B]``."""

    memories: Tensor
    stop_probs: Tensor
    choice_entropy: Tensor | None = None

    def output_memory(self) -> Tensor:
        """The distribution of the memory the machine stops with: ``sum_t p_t memories[t]``, ``[B, M, M]``."""
        return torch.einsum("tb,tbij->bij", self.stop_probs, self.memories)

    def stopped_at(self, horizons: Tensor) -> "Rollout":
        """The same run with example b forced to stop by step ``horizons[b]`` (``LongTensor[B]``,
        1..T): its stop probabilities as :func:`stop_at_horizons` gives them."""
        return self._replace(stop_probs=stop_at_horizons(self.stop_probs, horizons))


def stop_distribution(stop_logits: Tensor) -> Tensor:
    """``p_t = f_t prod_{i<t}(1 - f_i)`` for t < T and ``p_T = 1 - sum_{t<T} p_t``.

    stop_logits ``[T, B]`` (``f_t = sigmoid(logit)``; the last one is unused) -> ``[T, B]``.
    Computed in log space; ``p_T`` as ``prod_{i<T}(1 - f_i)``, which equals ``1 - sum_{t<T} p_t``.
    """
    log_continue = F.logsigmoid(-stop_logits)
    survived = torch.cumsum(log_continue, dim=0) - log_continue  # log prod_{i<t}(1 - f_i)
    log_p = survived + F.logsigmoid(stop_logits)
    log_p = torch.cat([log_p[:-1], survived[-1:]], dim=0)
    return log_p.exp()


def stop_at_horizons(stop_probs: Tensor, horizons: Tensor) -> Tensor:
    """The stop distribution of a run in which example b must stop by step ``horizons[b]``.

    stop_probs ``[T, B]`` (:func:`stop_distribution`), horizons ``LongTensor[B]`` in 1..T ->
    ``[T, B]``: ``p_t`` before the horizon's step ``h_b - 1``, all the probability left there
    (``sum_{t >= h_b - 1} p_t``) and 0 after, as :func:`stop_distribution` gives it for a run of
    h_b steps.
    """
    steps = stop_probs.shape[0]
    if horizons.shape != stop_probs.shape[1:]:
        raise ValueError(f"horizons must be [B] = {list(stop_probs.shape[1:])}, got {list(horizons.shape)}")
    if horizons.numel() and (int(horizons.min()) < 1 or int(horizons.max()) > steps):
        raise ValueError(f"horizons must lie in 1..{steps}, got {int(horizons.min())}..{int(horizons.max())}")
    step = torch.arange(steps, device=stop_probs.device)[:, None]
    last = horizons.to(stop_probs.device)[None, :] - 1
    from_here = stop_probs.flip(0).cumsum(0).flip(0)  # sum_{u >= t} p_u: what is left, without 1 - sum
    return torch.where(step < last, stop_probs, torch.where(step == last, from_here, torch.zeros_like(stop_probs)))


def choice_entropy(choice_logits: Tensor) -> Tensor:
    """Mean entropy of the choices, ``[B, slots, R+Q]`` logits (``-inf`` = missing option) -> ``[B]``.

    Missing options are clamped to a finite -1e4 first: their probability is still exactly 0,
    but ``0 * log 0`` no longer turns the gradient into NaN.
    """
    log_weights = torch.log_softmax(choice_logits.clamp_min(-1e4), dim=-1)
    return -(log_weights.exp() * log_weights).sum(-1).mean(-1)


def example_losses(rollout: Rollout, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Expected negative log-likelihood of the target cells, per example.

    target ``LongTensor[B, M]``, mask ``BoolTensor[B, M]`` (scored cells). Returns ``[B]``:
    ``-sum_t p_t sum_{i in mask} log clamp(memories[t, b, i, target_i], eps)``.
    """
    steps, batch_size, memory_size = rollout.memories.shape[:3]
    if target.shape != (batch_size, memory_size) or mask.shape != target.shape:
        raise ValueError(f"target and mask must be [B, M] = {[batch_size, memory_size]}, got "
                         f"{list(target.shape)} and {list(mask.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= memory_size):
        raise ValueError(f"target cells must hold values in 0..{memory_size - 1}, got values from "
                         f"{int(target.min())} to {int(target.max())}")
    index = target[None, :, :, None].expand(steps, -1, -1, 1)
    likelihood = rollout.memories.gather(-1, index).squeeze(-1)  # [T, B, M]
    cell_nll = -torch.log(likelihood.clamp_min(eps)) * mask
    return (rollout.stop_probs * cell_nll.sum(-1)).sum(0)


def rollout_loss(rollout: Rollout, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """:func:`example_losses` averaged over the batch: a scalar."""
    return example_losses(rollout, target, mask, eps).mean()


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> Tensor:
    """Standard Gumbel samples ``-log(-log U)``, U uniform on (0, 1), of ``shape``.

    Added to logits, ``argmax(logits + g)`` is a sample of ``softmax(logits)`` (the Gumbel-max
    trick); ``softmax((logits + g) / tau)`` is its relaxation (Jang et al. 2017; Maddison et al. 2017).
    """
    uniform = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    tiny = torch.finfo(dtype).tiny
    return -torch.log(-torch.log(uniform.clamp(tiny, 1.0 - torch.finfo(dtype).eps)))


def broadcast_state(state: Any, batch_size: int) -> Any:
    """A controller state of batch 1 (None, a tensor ``[1, ...]`` or a tuple of them) as views of batch ``batch_size``."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.expand(batch_size, *state.shape[1:])
    return tuple(broadcast_state(part, batch_size) for part in state)


class NRAM(nn.Module):
    """A Neural Random-Access Machine with a given :class:`MachineConfig`.

    ``forward(memory0, steps)`` unrolls the soft machine; the same weights run at any memory size.
    """

    def __init__(self, config: MachineConfig | None = None):
        super().__init__()
        self.config = config if config is not None else MachineConfig()
        self.layout = CircuitLayout(self.config.num_registers, self.config.gates)
        self.controller = make_controller(self.config.controller, self.config.num_registers,
                                          self.layout.num_logits, self.config.hidden_size,
                                          dropout=self.config.dropout, dropout_p=self.config.dropout_p,
                                          **self.config.controller_options)
        self.register_buffer("padding_index", self.layout.padding_index(), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the controller's parameters (and of the soft machine)."""
        return next(self.parameters()).dtype

    def check_memory(self, memory0: Tensor, steps: int, integer: bool | None = None, values: bool = True) -> None:
        """Raise ``ValueError`` unless memory0 is ``[B, M]`` integer cells in 0..M-1 (or, unless
        ``integer``, ``[B, M, M]`` distributions), with M >= 2, and steps >= 1. ``values=False``
        leaves the cells' range to the caller."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        is_integer = not memory0.dtype.is_floating_point
        if integer and not is_integer:
            raise ValueError(f"memory0 must hold integer cells [B, M], got dtype {memory0.dtype}")
        if is_integer and memory0.dim() != 2:
            raise ValueError(f"integer memory0 must be [batch, M], got shape {tuple(memory0.shape)}")
        if is_integer and memory0.dtype != torch.long:
            raise ValueError(f"integer memory0 must be a LongTensor (int64), got dtype {memory0.dtype}")
        if not is_integer and (memory0.dim() != 3 or memory0.shape[1] != memory0.shape[2]):
            raise ValueError(f"memory0 distributions must be [batch, M, M], got shape {tuple(memory0.shape)}")
        if memory0.shape[0] < 1:
            raise ValueError("memory0 has an empty batch")
        if memory0.device != self.padding_index.device:
            raise ValueError(f"memory0 is on {memory0.device} but the model on {self.padding_index.device}; "
                             f"move one to the other (.to(device))")
        memory_size = memory0.shape[1]
        if memory_size < 2:
            raise ValueError(f"memory size M must be >= 2, got {memory_size}")
        if values and is_integer and memory0.numel():
            low, high = (int(v) for v in torch.aminmax(memory0))
            if low < 0 or high >= memory_size:
                raise ValueError(f"memory cells must hold values in 0..{memory_size - 1} (M = {memory_size}), "
                                 f"got values from {low} to {high}")

    def step_logits(self, inputs: Tensor, controller_state: Any, readout: tuple[Tensor, Tensor]
                    ) -> tuple[Tensor, Tensor, Any]:
        """One controller step: register flags ``[B, R]`` -> (choice logits ``[B, slots, R+Q]``
        with ``-inf`` on missing options, stop logit ``[B]``, new controller state).

        ``readout`` is :meth:`readout`'s result, taken once per rollout.
        """
        logits, controller_state = self._logits(inputs, controller_state, readout)
        choice_logits, stop_logit = spread_logits(logits, self.padding_index, self.layout)
        return choice_logits.permute(2, 1, 0), stop_logit, controller_state

    def _logits(self, inputs: Tensor, controller_state: Any, readout: tuple[Tensor, Tensor]) -> tuple[Tensor, Any]:
        """One controller step, batch-last: flags ``[B, R]`` -> (``[logits, blank]`` ``[num_logits + 1, B]``, state)."""
        hidden, controller_state = self.controller.features(inputs, controller_state)
        weight, bias = readout
        return torch.addmm(bias, weight, hidden.T), controller_state

    def readout(self) -> tuple[Tensor, Tensor]:
        """The controller's read-out for one rollout, with the blank output that
        :func:`nram.circuit.spread_logits` needs: ``(weight [num_logits + 1, H], bias [num_logits + 1, 1])``."""
        return readout_with_blank(*self.controller.readout_weight())

    @property
    def num_choice_logits(self) -> int:
        """How many logits the choices take at one step (all the controller's but the stop logit)."""
        return self.layout.num_logits - 1

    def _unroll(self, memory0: Tensor, steps: int, choice_noise: Tensor | None = None,
                temperature: float | Tensor = 1.0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(memory [M, M, B], [logits, blank] [num_logits + 1, B])`` per step.

        The whole rollout runs value-major (batch innermost, see :mod:`nram.machine`). With
        ``choice_noise`` ``[T, num_choice_logits, B]`` the choices mix by ``softmax((logits +
        noise) / temperature)`` (``temperature`` a float or ``[B]``); the yielded logits are the
        controller's own.
        """
        batch_size, memory_size = memory0.shape[:2]
        if memory0.dtype.is_floating_point:
            memory = memory0.permute(1, 2, 0).contiguous()
        else:
            memory = one_hot_cells(memory0, self.dtype)
        registers = initial_registers(batch_size, self.layout.num_registers, memory_size,
                                      dtype=memory.dtype, device=memory.device)
        controller_state = self.controller.initial_state(batch_size, memory.device)
        readout = self.readout()
        constants = constant_values(batch_size, memory_size, dtype=memory.dtype, device=memory.device)
        for step in range(steps):
            logits, controller_state = self._logits(registers[:, 0].T, controller_state, readout)
            mixed = logits
            if choice_noise is not None:
                chosen = (logits[:self.num_choice_logits] + choice_noise[step]) / temperature
                mixed = torch.cat([chosen, logits[self.num_choice_logits:]])
            weights = choice_weights(mixed, self.padding_index, self.layout)
            memory, registers = step_values(memory, registers, weights, self.layout, constants)
            yield memory, logits

    def forward(self, memory0: Tensor, steps: int, *, with_entropy: bool = False, choice_noise: Tensor | None = None,
                temperature: float | Tensor = 1.0) -> Rollout:
        """Unroll the soft machine for ``steps`` timesteps.

        memory0: integer cells ``LongTensor[B, M]`` (one-hot encoded here) or distributions
        ``[B, M, M]``. Returns a :class:`Rollout` with memories ``[T, B, M, M]``; its
        ``choice_entropy`` (of the controller's own logits) is filled only ``with_entropy``.

        ``choice_noise`` ``[T, num_choice_logits, B]`` (e.g. :func:`gumbel_noise`) and
        ``temperature`` (a float or ``[B]``) turn every choice into the Gumbel-softmax relaxation
        of a sampled choice, ``softmax((logits + noise) / temperature)``: at a low temperature the
        soft machine runs near-discrete sampled programs, so a mixture of programs no longer
        scores as one. The stop logit is never perturbed.
        """
        self.check_memory(memory0, steps)
        if choice_noise is not None and choice_noise.shape != (steps, self.num_choice_logits, memory0.shape[0]):
            raise ValueError(f"choice_noise must be [T, num_choice_logits, B] = "
                             f"{[steps, self.num_choice_logits, memory0.shape[0]]}, got {list(choice_noise.shape)}")
        memories, stop_logits, entropies = [], [], []
        for memory, logits in self._unroll(memory0, steps, choice_noise, temperature):
            memories.append(memory)
            stop_logits.append(logits[self.layout.num_logits - 1])
            if with_entropy:
                choice_logits = spread_logits(logits, self.padding_index, self.layout)[0]
                entropies.append(choice_entropy(choice_logits.permute(2, 1, 0)))
        return Rollout(torch.stack(memories).permute(0, 3, 1, 2), stop_distribution(torch.stack(stop_logits)),
                       torch.stack(entropies) if with_entropy else None)

    def trains_natively(self) -> bool:
        """Whether :meth:`train_rollout_natively` runs here: a plain MLP controller (no dropout) on
        a CPU where the C code may train (:func:`nram.native.usable`)."""
        return type(self.controller) is MLPController and native.usable(self.controller.readout.weight, training=True)

    def train_rollout_natively(self, memory0: Tensor, target: Tensor, mask: Tensor, steps: int, *, scale: float,
                               eps: float) -> tuple[Tensor, Tensor]:
        """Forward and backward of one training rollout in one C call (:mod:`nram.native_training`).

        memory0, target ``LongTensor[B, M]``, mask ``BoolTensor[B, M]``. Adds the gradient of
        ``scale * example_losses(self(memory0, steps), target, mask, eps).sum()`` to the
        parameters' ``.grad``, and returns those losses ``[B]`` and the output memory ``[B, M, M]``,
        without gradients. Only where :meth:`trains_natively`.
        """
        if not self.trains_natively():
            raise ValueError("the one-call training rollout runs a plain MLP controller on the CPU, with the C code "
                             "built and NRAM_NATIVE=1; train this model through forward() and backward()")
        self.check_memory(memory0, steps, integer=True, values=False)
        layers = [(layer.weight, layer.bias) for layer in (*self.controller.hidden_layers, self.controller.readout)]
        for parameter in (p for pair in layers for p in pair):
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        return native_training.train_mlp(memory0, target, mask, steps, self.layout, layers,
                                         [(weight.grad, bias.grad) for weight, bias in layers], scale=scale, eps=eps)

    def output_memory(self, memory0: Tensor, steps: int) -> Tensor:
        """``sum_t p_t memories[t]`` ``[B, M, M]`` without keeping every step's memory.

        Equals ``forward(memory0, steps).output_memory()`` in O(B M^2) memory instead of
        O(T B M^2): what evaluation on long inputs needs. In eval mode without gradients, on
        integer cells and where the C code is usable, the steps run in C tile by tile
        (:meth:`_tiled_output`). Otherwise, in eval mode on the CPU the batch runs in slices of
        about :data:`CPU_SLICE_BYTES` of memory each; the examples are independent, so the
        result is the same. Not in training mode, where batchwise dropout draws one pattern per
        call, and not on CUDA, which wants the whole batch at once.
        """
        if (not self.training and not torch.is_grad_enabled() and not memory0.dtype.is_floating_point
                and native.usable(next(self.parameters()))):
            return self._tiled_output(memory0, steps)
        self.check_memory(memory0, steps)
        batch_size, memory_size = memory0.shape[:2]
        slice_size = max(1, CPU_SLICE_BYTES // (memory_size * memory_size * self.dtype.itemsize))
        if self.training or memory0.device.type != "cpu" or batch_size <= slice_size:
            return self._streamed_output(memory0, steps)
        return torch.cat([self._streamed_output(part, steps) for part in memory0.split(slice_size)])

    def _tiled_output(self, memory0: Tensor, steps: int) -> Tensor:
        """:meth:`output_memory` in C, tile by tile (:mod:`nram.native_inference`): the whole
        rollout in one call for a plain MLP controller; for other controllers, the controller in
        PyTorch and the rest of each step in C.

        Every register starts at 0, so at the first step every example shows the controller the
        same flags: it runs once, for all of them.
        """
        if type(self.controller) is MLPController:
            # The C code checks the cells' range: torch's multithreaded check would leave its
            # worker threads spinning on the cores the C code is about to use.
            self.check_memory(memory0, steps, values=False)
            layers = [(layer.weight, layer.bias) for layer in self.controller.hidden_layers]
            first_flags = torch.ones(1, self.layout.num_registers, dtype=self.dtype)
            try:
                return native_inference.infer_mlp(memory0, steps, self.layout,
                                                  layers + [self.controller.readout_weight()],
                                                  self.controller(first_flags)[0][0])
            except native_inference.CellOutOfRange:
                self.check_memory(memory0, steps)  # raises, naming the values found
                raise
        self.check_memory(memory0, steps)
        batch_size = memory0.shape[0]
        machine = native_inference.TiledInference(memory0, self.layout, self.dtype)
        weight, bias = self.controller.readout_weight()
        bias = bias.contiguous() if bias is not None else weight.new_zeros(weight.shape[0])
        flags = torch.ones(1, self.layout.num_registers, dtype=self.dtype)
        controller_state = self.controller.initial_state(1, memory0.device)
        for t in range(steps):
            hidden, controller_state = self.controller.features(flags, controller_state)
            flags = machine.step(hidden @ weight.T, bias, last=t == steps - 1)
            if t == 0:
                controller_state = broadcast_state(controller_state, batch_size)
        return machine.output()

    def _streamed_output(self, memory0: Tensor, steps: int) -> Tensor:
        output, survival = None, None
        for t, (memory, logits) in enumerate(self._unroll(memory0, steps)):
            stop_logit = logits[self.layout.num_logits - 1]
            f = torch.sigmoid(stop_logit) if t < steps - 1 else torch.ones_like(stop_logit)
            survival = torch.ones_like(f) if survival is None else survival
            weight = survival * f  # [B], against memory [M, M, B]
            output = memory * weight if output is None else output.addcmul_(memory, weight)
            survival = survival * (1.0 - f)
        return output.permute(2, 0, 1)
