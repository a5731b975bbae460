"""Shared test helpers: random distributions and a CUDA marker."""

import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_distributions(*shape: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Dirichlet-like random distributions over the last dimension, some of them sharply peaked."""
    logits = torch.randn(*shape, generator=generator, dtype=dtype) * 3.0
    return torch.softmax(logits, dim=-1)
