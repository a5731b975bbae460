"""A training rollout in C: forward and backward in one call, for the MLP controller on the CPU.

At the batch sizes a training step splits into (one rollout per length, a few examples each),
the PyTorch rollout costs more in per-operation overhead than in arithmetic: every timestep is
a dozen autograd nodes forward and as many backward. ``nram_train_mlp`` (``native_step.c``)
runs the whole rollout, tile by tile: the controller, the choice softmax, the machine steps,
the stop distribution and the loss, then the backward of all of it, adding the parameters'
gradients to their ``.grad``. It computes what :meth:`nram.model.NRAM.forward` and
:func:`nram.model.example_losses` followed by ``backward()`` compute, to float rounding
(``tests/test_native_training.py`` holds it to the PyTorch path in float64).

The optimizer step that follows has its own call, ``nram_adam`` (:class:`AdamUpdate`, used by
:class:`training.optim.NativeAdam`): torch's Adam spends most of a step of these few small
tensors in Python around its kernel.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from nram.circuit import CircuitLayout
from nram.native import C_TYPES, _layout_arrays, library


def pointers(parts: list[Tensor]) -> ctypes.Array:
    """The tensors' data addresses as a C array of pointers."""
    return (ctypes.c_void_p * len(parts))(*[t.data_ptr() for t in parts])


def train_mlp(cells: Tensor, target: Tensor, mask: Tensor, steps: int, layout: CircuitLayout,
              layers: list[tuple[Tensor, Tensor]], grads: list[tuple[Tensor, Tensor]], *, scale: float,
              eps: float) -> tuple[Tensor, Tensor]:
    """One soft training rollout of a feed-forward controller, forward and backward, in one C call.

    cells, target ``LongTensor[B, M]``, mask ``BoolTensor[B, M]``; ``layers``: the controller's
    ``(weight [out, in], bias [out])``, hidden layers (each followed by ReLU) then the read-out;
    ``grads``: tensors of the same shapes, to which the gradient of ``scale * sum_b loss_b`` is
    added. All contiguous. Returns (per-example losses ``[B]``, as
    :func:`nram.model.example_losses`, and the output memory ``sum_t p_t memory_t``
    ``[B, M, M]``), both without gradients.
    """
    if cells.dim() != 2 or target.shape != cells.shape or mask.shape != cells.shape:
        raise ValueError(f"cells, target and mask must all be [B, M], got {list(cells.shape)}, {list(target.shape)} "
                         f"and {list(mask.shape)}")
    tensors = [t for pair in layers + grads for t in pair]
    if not all(t.is_contiguous() for t in tensors):
        raise ValueError("the native training rollout reads raw memory: pass contiguous weights and gradients")
    dtype = layers[0][0].dtype
    lib = library(C_TYPES[dtype])
    cells, target = cells.to(torch.long).contiguous(), target.to(torch.long).contiguous()
    mask = mask.to(torch.uint8).contiguous()
    batch_size, memory_size = cells.shape

    sizes = [layers[0][0].shape[1]] + [weight.shape[0] for weight, _ in layers]
    losses = torch.empty(batch_size, dtype=dtype)
    output = torch.empty(memory_size, memory_size, batch_size, dtype=dtype)
    gates, first_slot, widths = _layout_arrays(layout)
    status = lib.nram_train_mlp(
        memory_size, batch_size, layout.num_registers, layout.num_gates, layout.num_slots, gates, first_slot,
        widths, steps, len(layers) - 1, (ctypes.c_long * len(sizes))(*sizes),
        pointers([w for w, _ in layers]), pointers([b for _, b in layers]),
        pointers([w for w, _ in grads]), pointers([b for _, b in grads]), scale, eps,
        cells.data_ptr(), target.data_ptr(), mask.data_ptr(), losses.data_ptr(), output.data_ptr())
    if status == -2:  # found before any gradient was added
        raise ValueError(f"a memory cell or target holds a value outside 0..{memory_size - 1}")
    if status != 0:
        raise MemoryError("nram_train_mlp could not allocate its scratch memory")
    return losses, output.permute(2, 0, 1)


class AdamUpdate:
    """Adam's update of a fixed set of CPU tensors in one C call (``nram_adam``), as
    ``torch.optim.Adam`` takes it (without amsgrad).

    Built once over the parameters and Adam's two moments (lists with one entry per parameter
    tensor: contiguous CPU tensors of one float dtype, each moment of its parameter's shape), it
    is then called every step with the gradients; it updates parameters and moments in place.
    """

    def __init__(self, params: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor]) -> None:
        if not params or not len(params) == len(exp_avgs) == len(exp_avg_sqs):
            raise ValueError("params, exp_avgs and exp_avg_sqs must have one entry per parameter, at least one")
        self.dtype = params[0].dtype
        if self.dtype not in C_TYPES:
            raise ValueError(f"the native Adam update runs float32 and float64, got {self.dtype}")
        for group in (exp_avgs, exp_avg_sqs):
            if any(moment.shape != p.shape for moment, p in zip(group, params)):
                raise ValueError("each of Adam's moments must have its parameter's shape")
        self._check(params + exp_avgs + exp_avg_sqs)
        self.tensors = (params, exp_avgs, exp_avg_sqs)  # kept alive while their addresses are in use
        self.sizes = [p.numel() for p in params]
        self._library = library(C_TYPES[self.dtype])
        if self._library is None:
            raise RuntimeError("the native Adam update needs the C code, which could not be built here")
        self._arguments = ((ctypes.c_long * len(params))(*self.sizes), pointers(params), pointers(exp_avgs),
                           pointers(exp_avg_sqs))

    def _check(self, tensors: list[Tensor]) -> None:
        if not all(t.dtype == self.dtype and t.device.type == "cpu" and t.is_contiguous() for t in tensors):
            raise ValueError(f"the native Adam update reads raw memory: pass contiguous CPU {self.dtype} tensors")

    def accepts(self, grads: list[Tensor | None]) -> bool:
        """Whether ``grads`` can be this update's gradients: one per parameter, each a dense
        contiguous CPU tensor of the parameters' dtype and its parameter's size."""
        return len(grads) == len(self.sizes) and all(
            g is not None and g.dtype == self.dtype and g.layout == torch.strided and g.device.type == "cpu"
            and g.is_contiguous() and g.numel() == size for g, size in zip(grads, self.sizes))

    def __call__(self, grads: list[Tensor], steps: list[float], *, lr: float, beta1: float, beta2: float, eps: float,
                 weight_decay: float, maximize: bool) -> None:
        """One step: ``grads`` as :meth:`accepts` them, ``steps`` each parameter's step count after
        this step (1 on the first)."""
        if not self.accepts(grads) or len(steps) != len(self.sizes):
            raise ValueError("pass one contiguous CPU gradient of its parameter's dtype and size, and one step count, "
                             "per parameter")
        sizes, params, exp_avgs, exp_avg_sqs = self._arguments
        self._library.nram_adam(len(self.sizes), sizes, (ctypes.c_double * len(steps))(*steps), params,
                                pointers(grads), exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps, weight_decay,
                                int(maximize))
