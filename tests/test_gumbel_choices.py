"""Training on sampled programs (``gumbel_temperature``) and checks that see the discrete machine
(``check_discrete``), against references computed independently of the code under test."""

import dataclasses

import pytest
import torch

from nram.model import NRAM, MachineConfig, gumbel_noise
from training.config import TrainConfig
from training.population import PopulationTrainer
from training.trainer import Trainer

SMALL = dict(task="listk", min_length=1, max_length=3, memory_extra=2, timesteps=3, num_registers=3,
             hidden_size=16, batch_size=8, lr=0.01, log_every=2, eval_every=100, eval_examples=16,
             checkpoint_every=100)


def test_the_argmax_of_logits_plus_gumbel_noise_samples_their_softmax():
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    draws = 200_000
    noise = gumbel_noise((draws, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
    frequencies = torch.bincount((logits + noise).argmax(1), minlength=4).double() / draws
    exponentials = [2.718281828459045 ** float(v) for v in logits]
    softmax = torch.tensor([e / sum(exponentials) for e in exponentials], dtype=torch.float64)
    torch.testing.assert_close(frequencies, softmax, rtol=0, atol=4e-3)  # ~4 standard errors


@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_noisy_choices_mix_by_the_softmax_of_logits_plus_noise_over_the_temperature(temperature):
    """The same offset c on every example and step is a model whose choice read-out is
    ``(W h + b + c) / tau``: build that model and compare the two rollouts (float64)."""
    torch.manual_seed(0)
    model = NRAM(MachineConfig(num_registers=3, hidden_size=8)).double()
    offset = torch.randn(model.num_choice_logits, dtype=torch.float64)
    reference = NRAM(model.config).double()
    reference.load_state_dict(model.state_dict())
    rows = model.num_choice_logits
    with torch.no_grad():
        reference.controller.readout.weight[:rows] /= temperature
        reference.controller.readout.bias[:rows] = (reference.controller.readout.bias[:rows] + offset) / temperature
    memory = torch.randint(0, 7, (5, 7))
    noise = offset[None, :, None].expand(4, rows, 5)
    noisy = model(memory, 4, choice_noise=noise, temperature=temperature)
    expected = reference(memory, 4)
    torch.testing.assert_close(noisy.memories, expected.memories, rtol=0, atol=1e-12)
    torch.testing.assert_close(noisy.stop_probs, expected.stop_probs, rtol=0, atol=1e-12)
    plain = model(memory, 4)
    assert (noisy.memories - plain.memories).abs().max() > 1e-3  # the noise does move the machine


def test_choice_noise_of_the_wrong_shape_is_refused():
    model = NRAM(MachineConfig(num_registers=2, hidden_size=8))
    with pytest.raises(ValueError, match="choice_noise must be"):
        model(torch.zeros(3, 6, dtype=torch.long), 2, choice_noise=torch.zeros(2, model.num_choice_logits, 4))


def test_a_run_with_gumbel_choices_trains_on_the_noise_and_repeats_with_its_seed(tmp_path):
    runs = [Trainer(TrainConfig(**SMALL, steps=4, gumbel_temperature=temperature), tmp_path / f"{name}",
                    progress=False) for name, temperature in (("a", 0.5), ("b", 0.5), ("plain", 0.0))]
    runs[2].native_rollouts = False  # the same PyTorch path as the noisy runs, so only the noise differs
    for run in runs:
        run.train()
    first, again, plain = (run.model.state_dict() for run in runs)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], plain[name]) for name in first)


def test_a_negative_temperature_is_refused():
    with pytest.raises(ValueError, match="gumbel_temperature must be >= 0"):
        TrainConfig(**SMALL, gumbel_temperature=-1.0).validate()


def test_a_discrete_check_scores_each_length_by_the_worse_machine(tmp_path, monkeypatch):
    soft, discrete = [0.1, 0.5, 0.0], [0.3, 0.2, 0.0]
    trainer = Trainer(TrainConfig(**SMALL, check_discrete=True), tmp_path, progress=False)
    monkeypatch.setattr(trainer, "evaluate", lambda lengths, discrete=False, errors=(soft, discrete): [
        {"length": n, "cell_error": errors[discrete][n - 1]} for n in lengths])
    assert trainer.training_error() == pytest.approx((0.3 + 0.5 + 0.0) / 3, abs=1e-12)
    trainer.config = dataclasses.replace(trainer.config, check_discrete=False)
    assert trainer.training_error() == pytest.approx(0.6 / 3, abs=1e-12)


def test_a_population_checks_each_member_as_its_own_run_would(tmp_path):
    """After a few steps the members' soft and discrete machines disagree (checked), and each
    member's check is the one its own run makes with its weights and seed."""
    config = TrainConfig(**{**SMALL, "lr": 0.03}, steps=30, check_discrete=True)
    population = PopulationTrainer(dataclasses.replace(config, population=3), tmp_path / "population",
                                   progress=False)
    population.train()
    errors = population.training_errors()
    disagree = False
    for index in range(3):
        single = Trainer(dataclasses.replace(config, seed=index), tmp_path / f"seed{index}", progress=False)
        single.model.load_state_dict(population.model.member_state(index))
        assert float(errors[index]) == pytest.approx(single.training_error(), abs=1e-9)
        soft, discrete = (single.evaluate([1, 2, 3], discrete=mode) for mode in (False, True))
        disagree |= any(s["cell_error"] != d["cell_error"] for s, d in zip(soft, discrete))
    assert disagree
