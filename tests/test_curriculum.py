"""Curricula: length distributions against the exact mixture, promotion, state round trips."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tasks import FixedCurriculum, ZarembaCurriculum

SAMPLES = 100_000


def zaremba_probabilities(low: int, high: int, level: int) -> dict[int, float]:
    """P(length = l) of Zaremba & Sutskever's mixture, by enumerating e ~ Geometric(1/2) on {0, 1, ...}.

    For e < high - level the top is level + e; every larger e (total mass 2^-(high-level))
    clamps the top to high.
    """
    tops = [(level + e, 0.5 ** (e + 1)) for e in range(high - level)] + [(high, 0.5 ** (high - level))]
    probs = {}
    for length in range(low, high + 1):
        p = 0.10 / (high - low + 1)
        for top, weight in tops:
            p += weight * (0.25 * (low <= length <= top) / (top - low + 1) + 0.65 * (length == top))
        probs[length] = p
    return probs


def assert_frequencies(lengths: torch.Tensor, probs: dict[int, float]) -> None:
    counts = torch.bincount(lengths, minlength=max(probs) + 1).double() / lengths.numel()
    assert set(lengths.unique().tolist()) <= set(probs)
    for length, p in probs.items():
        tolerance = 5 * math.sqrt(p * (1 - p) / lengths.numel()) + 1e-4
        assert abs(counts[length].item() - p) < tolerance, (length, counts[length].item(), p)


def test_exact_probabilities_sum_to_one():
    assert sum(zaremba_probabilities(2, 9, 4).values()) == pytest.approx(1.0)


@pytest.mark.parametrize("low, high, level", [(1, 10, 1), (1, 10, 5), (3, 8, 8), (2, 20, 4)])
def test_zaremba_length_distribution(low, high, level):
    curriculum = ZarembaCurriculum(low, high, level=level)
    lengths = curriculum.sample_lengths(SAMPLES, torch.Generator().manual_seed(0))
    assert lengths.shape == (SAMPLES,) and lengths.dtype == torch.long
    assert_frequencies(lengths, zaremba_probabilities(low, high, level))


def test_fixed_curriculum_is_uniform_and_never_moves():
    curriculum = FixedCurriculum(3, 7)
    lengths = curriculum.sample_lengths(SAMPLES, torch.Generator().manual_seed(1))
    assert_frequencies(lengths, {n: 1 / 5 for n in range(3, 8)})
    assert curriculum.level == 7
    assert curriculum.update(0.0) is False and curriculum.level == 7
    assert torch.equal(FixedCurriculum(4, 4).sample_lengths(10), torch.full((10,), 4))
    assert curriculum.state_dict() == {}


def test_same_seed_same_lengths():
    curriculum = ZarembaCurriculum(1, 12, level=3)
    first = curriculum.sample_lengths(64, torch.Generator().manual_seed(5))
    assert torch.equal(first, curriculum.sample_lengths(64, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, curriculum.sample_lengths(64, torch.Generator().manual_seed(6)))


def test_promotion_rule():
    curriculum = ZarembaCurriculum(2, 4, threshold=0.1)
    assert curriculum.level == 2
    assert curriculum.update(0.5) is False and curriculum.level == 2
    assert curriculum.update(0.1) is False and curriculum.level == 2  # strictly below the threshold
    assert curriculum.update(float("nan")) is False and curriculum.level == 2
    assert curriculum.update(0.09) is True and curriculum.level == 3
    assert curriculum.update(0.0) is True and curriculum.level == 4
    assert curriculum.update(0.0) is False and curriculum.level == 4  # already at max_length


def test_state_dict_round_trip_through_weights_only_load():
    curriculum = ZarembaCurriculum(1, 10, threshold=0.05)
    curriculum.update(0.0)
    curriculum.update(0.0)
    buffer = io.BytesIO()
    torch.save({"curriculum": curriculum.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["curriculum"]
    restored = ZarembaCurriculum(1, 10, threshold=0.05)
    restored.load_state_dict(state)
    assert restored.level == curriculum.level == 3
    assert torch.equal(restored.sample_lengths(100, torch.Generator().manual_seed(2)),
                       curriculum.sample_lengths(100, torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="level must be an integer in 1..10"):
        restored.load_state_dict({"level": 11})


def test_argument_validation():
    with pytest.raises(ValueError, match="min_length <= max_length"):
        ZarembaCurriculum(5, 4)
    with pytest.raises(ValueError, match="min_length <= max_length"):
        FixedCurriculum(0, 4)
    with pytest.raises(ValueError, match="threshold"):
        ZarembaCurriculum(1, 4, threshold=0.0)
    with pytest.raises(ValueError, match="level must be"):
        ZarembaCurriculum(2, 4, level=1)
