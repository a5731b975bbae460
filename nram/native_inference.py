"""Inference in C, tile by tile: ``NRAM.output_memory`` without gradients, on the CPU.

Evaluation runs the soft machine on thousands of examples without a gradient. Here the batch
is kept tile by tile (64 examples, ``TILE`` in ``native_step.c``), and each tile runs a whole
step, or a whole rollout, while its memory, registers and scratch stay in the cache:

- :func:`infer_mlp`: for a feed-forward (MLP) controller, the whole rollout, controller
  included, in one C call (``nram_infer_mlp``).
- :class:`TiledInference`: for any controller, which runs in PyTorch between the C steps
  (``nram_infer_step``); the step's softmax, gates and output update are in C.

Both split the tiles across ``torch.get_num_threads()`` threads for large batches. The C code
is built and loaded by :mod:`nram.native`.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from nram.circuit import CircuitLayout
from nram.native import C_TYPES, _check_contiguous, _layout_arrays, library, run_split


class TiledInference:
    """The soft machine's state during inference, stored tile by tile for ``nram_infer_step``.

    ``memory0`` holds integer cells ``[B, M]``; the machine starts with every register at 0.
    Each :meth:`step` takes the controller's logits ``[B, L]`` (example-major, as ``hidden @
    weight.T`` gives them, the bias apart) and returns the register flags ``[B, R]`` the
    controller reads next; :meth:`output` is ``sum_t p_t memory_t`` ``[B, M, M]``, as
    :meth:`nram.model.NRAM.output_memory` defines it. The C code runs each tile's softmax,
    gates and output update while the tile is in the cache, and splits the tiles across
    ``torch.get_num_threads()`` threads for large batches.
    """

    def __init__(self, memory0: Tensor, layout: CircuitLayout, dtype: torch.dtype):
        self.lib = library(C_TYPES[dtype])
        self.layout = layout
        self.batch_size, memory_size = memory0.shape
        tile = self.lib.nram_tile()
        self.num_tiles = -(-self.batch_size // tile)
        self.memory = one_hot_tiles(memory0, tile, dtype)
        self.registers = self.memory.new_zeros(self.num_tiles, layout.num_registers, memory_size, tile)
        self.registers[:, :, 0] = 1
        self.output_memory = self.memory.new_zeros(memory_size, memory_size, self.batch_size)
        self.survival = self.memory.new_ones(self.num_tiles * tile)
        gates, first_slot, widths = _layout_arrays(layout)
        self.head = (memory_size, self.batch_size, layout.num_registers, layout.num_gates, layout.num_slots,
                     gates, first_slot, widths)

    def step(self, logits: Tensor, bias: Tensor, last: bool) -> Tensor:
        """One timestep from the controller's logits ``logits + bias``: ``logits`` ``[B, L]``, or
        ``[1, L]`` for logits every example shares; ``bias`` ``[L]``. Returns the flags ``[B, R]``."""
        _check_contiguous(logits, bias)
        flags = logits.new_empty(self.batch_size, self.layout.num_registers)
        pointers = [t.data_ptr() for t in (logits, bias, self.memory, self.registers, self.output_memory,
                                           self.survival, flags)]
        stride = 0 if logits.shape[0] == 1 else logits.shape[1]
        head = self.head + (stride, self.layout.num_logits - 1, int(last))

        def run(first: int, end: int) -> None:
            if self.lib.nram_infer_step(*head, first, end, *pointers) != 0:
                raise MemoryError("nram_infer_step could not allocate its scratch memory")

        run_split(run, self.batch_size, self.num_tiles)
        return flags

    def output(self) -> Tensor:
        """``sum_t p_t memory_t`` ``[B, M, M]`` (a view of value-major storage)."""
        return self.output_memory.permute(2, 0, 1)


def one_hot_tiles(cells: Tensor, tile: int, dtype: torch.dtype) -> Tensor:
    """Integer cells ``[B, M]`` one-hot, tile by tile: ``[ceil(B / tile), M, M, tile]``, with
    ``[t, k, v, l]`` = 1 where example ``t * tile + l`` holds v in cell k (zeros past B)."""
    batch_size, memory_size = cells.shape
    num_tiles = -(-batch_size // tile)
    tiles = torch.zeros(num_tiles, memory_size, memory_size, tile, dtype=dtype)
    example = torch.arange(batch_size).unsqueeze(1)
    cell = torch.arange(memory_size)
    index = (((example // tile) * memory_size + cell) * memory_size + cells.cpu()) * tile + example % tile
    tiles.view(-1)[index.view(-1)] = 1
    return tiles


class CellOutOfRange(ValueError):
    """:func:`infer_mlp` found a cell outside 0..M-1 (which torch's own check would have to find
    first, with threads that then keep spinning on the cores the C code needs)."""


def infer_mlp(cells: Tensor, steps: int, layout: CircuitLayout, layers: list[tuple[Tensor, Tensor]],
              first_logits: Tensor) -> Tensor:
    """``sum_t p_t memory_t`` ``[B, M, M]`` of a whole soft rollout from integer cells ``[B, M]``,
    controller included, in one C call (``nram_infer_mlp``).

    ``layers``: the feed-forward controller's ``(weight [out, in], bias [out])``, hidden layers
    (each followed by ReLU) then the read-out; ``first_logits`` ``[L]``: its output for the
    first step's flags, which every example shares (all registers start at 0).
    """
    dtype = first_logits.dtype
    lib = library(C_TYPES[dtype])
    cells = cells.to(torch.long).contiguous()
    batch_size, memory_size = cells.shape
    layers = [(weight.detach().contiguous(), bias.detach().contiguous()) for weight, bias in layers]
    first_logits = first_logits.detach().contiguous()
    sizes = [layers[0][0].shape[1]] + [weight.shape[0] for weight, _ in layers]
    weights = (ctypes.c_void_p * len(layers))(*[weight.data_ptr() for weight, _ in layers])
    biases = (ctypes.c_void_p * len(layers))(*[bias.data_ptr() for _, bias in layers])
    output = first_logits.new_empty(memory_size, memory_size, batch_size)  # each tile zeroes its part
    gates, first_slot, widths = _layout_arrays(layout)
    head = (memory_size, batch_size, layout.num_registers, layout.num_gates, layout.num_slots, gates, first_slot,
            widths, steps, len(layers) - 1, (ctypes.c_long * len(sizes))(*sizes), weights, biases,
            first_logits.data_ptr())

    def run(first: int, end: int) -> None:
        status = lib.nram_infer_mlp(*head, first, end, cells.data_ptr(), output.data_ptr())
        if status == -2:
            raise CellOutOfRange(f"a memory cell holds a value outside 0..{memory_size - 1}")
        if status != 0:
            raise MemoryError("nram_infer_mlp could not allocate its scratch memory")

    run_split(run, batch_size, -(-batch_size // lib.nram_tile()))
    return output.permute(2, 0, 1)
