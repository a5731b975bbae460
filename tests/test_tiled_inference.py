"""Inference in C, tile by tile, against the rollout's definition.

``NRAM.output_memory`` in eval mode without gradients runs each 64-example tile through the
whole step while it is in the cache: for a plain MLP controller the whole rollout, controller
included, is one C call (``nram.native_inference.infer_mlp``); other controllers run in PyTorch between
C steps (``nram.native_inference.TiledInference``). The reference is ``forward(...).output_memory()`` on
the PyTorch step: every step's memory kept and weighted by the stop distribution.
"""

import pytest
import torch
import torch.nn.functional as F
from test_machine import GATE_SETS

from nram import native_inference
from nram.model import NRAM, MachineConfig

C_PATHS = ("TiledInference", "infer_mlp")


def model_and_cells(gates, controller, size, batch, dtype, seed=0, **options):
    torch.manual_seed(seed)
    if gates:  # None: all 14 gates
        options["gates"] = gates
    model = NRAM(MachineConfig(num_registers=3, controller=controller, **options)).to(dtype).eval()
    with torch.no_grad():  # sharper logits than at initialisation, so the steps differ more
        for parameter in model.parameters():
            parameter.mul_(3)
    cells = torch.randint(0, size, (batch, size), generator=torch.Generator().manual_seed(seed + 1))
    return model, cells


def reference_output(model, cells, steps, monkeypatch):
    monkeypatch.setenv("NRAM_NATIVE", "0")
    with torch.no_grad():
        output = model(cells, steps).output_memory()
    monkeypatch.setenv("NRAM_NATIVE", "1")
    return output


def tiled_output(model, cells, steps, monkeypatch, path):
    """output_memory, failing unless it ran on the C path ``path`` (one of C_PATHS)."""
    runs = []
    monkeypatch.setattr(native_inference, path, lambda *a, run=getattr(native_inference, path): runs.append(1) or run(*a))
    with torch.no_grad():
        output = model.output_memory(cells, steps)
    assert runs, f"output_memory did not take nram.native_inference.{path}"
    return output


def c_path(controller):
    return "infer_mlp" if controller == "mlp" else "TiledInference"


@pytest.mark.parametrize("gates", GATE_SETS)
@pytest.mark.parametrize("controller", ["mlp", "lstm", "gated", "table"])
@pytest.mark.parametrize("size,batch", [(2, 1), (7, 64), (10, 96), (10, 130)])  # 96: the last tile a whole number of vectors; 130: of 2 examples
def test_tiled_inference_equals_the_rollout_in_float64(gates, controller, size, batch, monkeypatch):
    model, cells = model_and_cells(gates, controller, size, batch, torch.float64)
    expected = reference_output(model, cells, 4, monkeypatch)
    torch.testing.assert_close(tiled_output(model, cells, 4, monkeypatch, c_path(controller)), expected,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("layers,hidden", [(1, 20), (3, 37)])
def test_mlp_rollout_in_c_with_other_depths_and_widths(layers, hidden, monkeypatch):
    model, cells = model_and_cells(None, "mlp", 8, 100, torch.float64, hidden_size=hidden,
                                   controller_options={"num_layers": layers})
    expected = reference_output(model, cells, 5, monkeypatch)
    torch.testing.assert_close(tiled_output(model, cells, 5, monkeypatch, "infer_mlp"), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("controller", ["mlp", "lstm"])
@pytest.mark.parametrize("size,batch", [(9, 70), (10, 96)])  # in float32 the sums run in blocks of values
def test_tiled_inference_in_float32_and_one_step(controller, size, batch, monkeypatch):
    model, cells = model_and_cells(None, controller, size, batch, torch.float32)
    for steps in (1, 3):
        expected = reference_output(model, cells, steps, monkeypatch)
        torch.testing.assert_close(tiled_output(model, cells, steps, monkeypatch, c_path(controller)), expected,
                                   rtol=0, atol=2e-6)


@pytest.mark.parametrize("controller", ["mlp", "lstm"])
def test_a_batch_split_across_threads_equals_one_thread(controller, monkeypatch):
    model, cells = model_and_cells(None, controller, 6, 1500, torch.float64)  # 1500 >= PARALLEL_MIN_BATCH
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = tiled_output(model, cells, 3, monkeypatch, c_path(controller))
        torch.set_num_threads(3)
        split = tiled_output(model, cells, 3, monkeypatch, c_path(controller))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, split)


def test_one_hot_tiles_places_every_cell():
    cells = torch.randint(0, 5, (70, 5), generator=torch.Generator().manual_seed(0))
    tiles = native_inference.one_hot_tiles(cells, 64, torch.float32)
    assert tiles.shape == (2, 5, 5, 64)
    by_example = tiles.permute(0, 3, 1, 2).reshape(128, 5, 5)
    assert torch.equal(by_example[:70], F.one_hot(cells, 5).float())
    assert not by_example[70:].any()


def test_the_tiled_path_is_not_taken_for_training_or_gradients(monkeypatch):
    model, cells = model_and_cells(None, "mlp", 5, 8, torch.float32)
    for path in C_PATHS:
        monkeypatch.setattr(native_inference, path, None)  # calling it would fail
    assert model.output_memory(cells, 2).requires_grad
    model.train()
    with torch.no_grad():
        model.output_memory(cells, 2)


@pytest.mark.parametrize("controller", ["mlp", "lstm"])
@pytest.mark.parametrize("bad", [-1, 7])
def test_a_cell_out_of_range_is_refused_with_its_value(controller, bad):
    model, cells = model_and_cells(None, controller, 7, 1500, torch.float32)
    cells[1499, 3] = bad  # in the last tile, which a second thread runs
    with torch.no_grad(), pytest.raises(ValueError, match=f"values in 0..6 .* got values from {min(bad, 0)} to "
                                                          f"{max(bad, 6)}"):
        model.output_memory(cells, 2)
