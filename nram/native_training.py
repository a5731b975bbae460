"""A training rollout in C: forward and backward in one call, for the MLP controller on the CPU.

At the batch sizes a training step splits into (one rollout per length, a few examples each),
the PyTorch rollout costs more in per-operation overhead than in arithmetic: every timestep is
a dozen autograd nodes forward and as many backward. ``nram_train_mlp`` (``native_step.c``)
runs the whole rollout, tile by tile: the controller, the choice softmax, the machine steps,
the stop distribution and the loss, then the backward of all of it, adding the parameters'
gradients to their ``.grad``. It computes what :meth:`nram.model.NRAM.forward` and
:func:`nram.model.example_losses` followed by ``backward()`` compute, to float rounding
(``tests/test_native_training.py`` holds it to the PyTorch path in float64).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from nram.circuit import CircuitLayout
from nram.native import C_TYPES, _layout_arrays, library


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

    def pointers(parts: list[Tensor]) -> ctypes.Array:
        return (ctypes.c_void_p * len(parts))(*[t.data_ptr() for t in parts])

    sizes = [layers[0][0].shape[1]] + [weight.shape[0] for weight, _ in layers]
    losses = torch.empty(batch_size, dtype=dtype)
    output = torch.empty(memory_size, memory_size, batch_size, dtype=dtype)
    gates, first_slot, widths = _layout_arrays(layout)
    status = lib.nram_train_mlp(
        memory_size, batch_size, layout.num_registers, layout.num_gates, layout.num_slots, gates, first_slot,
        widths, steps, len(layers) - 1, (ctypes.c_long * len(sizes))(*sizes),
        pointers([w.detach() for w, _ in layers]), pointers([b.detach() for _, b in layers]),
        pointers([w for w, _ in grads]), pointers([b for _, b in grads]), scale, eps,
        cells.data_ptr(), target.data_ptr(), mask.data_ptr(), losses.data_ptr(), output.data_ptr())
    if status == -2:  # found before any gradient was added
        raise ValueError(f"a memory cell or target holds a value outside 0..{memory_size - 1}")
    if status != 0:
        raise MemoryError("nram_train_mlp could not allocate its scratch memory")
    return losses, output.permute(2, 0, 1)

