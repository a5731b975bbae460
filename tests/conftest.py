"""Shared test helpers: random distributions, a CUDA marker and both CPU step backends.

Tests run with one torch thread: their tensors are small, and on a loaded 2-core machine a
second thread mostly adds contention.
"""

import pytest
import torch

torch.set_num_threads(1)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(params=["native", "pytorch"])
def step_backend(request, monkeypatch):
    """Run the test once with the C step (nram.native, for gradients too) and once with the PyTorch step."""
    monkeypatch.setenv("NRAM_NATIVE", "1" if request.param == "native" else "0")
    return request.param


def random_distributions(*shape: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Random distributions over the last dimension, some of them sharply peaked."""
    logits = torch.randn(*shape, generator=generator, dtype=dtype) * 3.0
    return torch.softmax(logits, dim=-1)
