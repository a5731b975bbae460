"""batch_by_length: every length of a batch trains at its own M(n) and T(n), and one step
follows the gradient of the mean loss over all examples."""

import math

import pytest
import torch

from nram.model import rollout_loss
from training.config import TrainConfig
from training.trainer import Trainer

SETTINGS = dict(task="listk", min_length=1, max_length=4, curriculum="fixed", timesteps=2, timesteps_per_length=1.0,
                num_registers=3, hidden_size=12, batch_size=12, batch_by_length=True, optimizer="sgd", lr=1.0,
                momentum=0.0, weight_decay=0.0, clip_value=0.0, clip_norm=0.0, gradient_noise=0.0,
                entropy_bonus=0.1, entropy_decay=1.0, eval_every=10**6, checkpoint_every=10**6)


def sampled_batches(trainer: Trainer):
    """What the trainer's next step will train on, drawn from a copy of its generator."""
    generator_state = trainer.data_generator.get_state()
    lengths = trainer.curriculum.sample_lengths(trainer.config.batch_size, trainer.data_generator)
    batches = trainer.training_batches(lengths)
    trainer.data_generator.set_state(generator_state)
    return lengths, batches


def test_each_length_runs_at_its_own_memory_size_and_time(tmp_path):
    trainer = Trainer(TrainConfig(**SETTINGS), tmp_path, progress=False)
    lengths, batches = sampled_batches(trainer)
    assert sorted(int(n) for group, *_ in batches for n in group) == sorted(lengths.tolist())
    assert len(batches) == len(torch.unique(lengths)) > 1
    for group, batch, steps, horizons in batches:
        assert horizons is None
        n = int(group[0])
        assert (group == n).all()
        assert batch.memory.shape == (group.numel(), trainer.config.memory_size_for(n))
        assert steps == trainer.config.timesteps_for(n)


def test_longest_input_sets_memory_and_time_by_default(tmp_path):
    trainer = Trainer(TrainConfig(**{**SETTINGS, "batch_by_length": False}), tmp_path, progress=False)
    lengths, [(group, batch, steps, horizons)] = sampled_batches(trainer)
    assert horizons is None
    longest = int(lengths.max())
    assert torch.equal(group, lengths)
    assert batch.memory.shape == (lengths.numel(), trainer.config.memory_size_for(longest))
    assert steps == trainer.config.timesteps_for(longest)


@pytest.mark.parametrize("jitter", [0.0, 1.0])
def test_one_step_follows_the_mean_gradient_of_examples_run_one_at_a_time(tmp_path, jitter):
    """Each example alone: its loss from a run of exactly its horizon (with ``timesteps_jitter``;
    T(n) without), its entropy bonus from every step of the rollout."""
    trainer = Trainer(TrainConfig(**SETTINGS, timesteps_jitter=jitter), tmp_path, progress=False)
    _, batches = sampled_batches(trainer)
    model = trainer.model
    before = [p.detach().clone() for p in model.parameters()]

    per_example = []
    for group, batch, steps, horizons in batches:
        n = int(group[0])
        if jitter:
            assert steps == trainer.config.timesteps_for(n) + math.ceil(jitter * trainer.config.timesteps_for(n))
            assert trainer.config.timesteps_for(n) <= int(horizons.min()) and int(horizons.max()) <= steps
        for row in range(batch.memory.shape[0]):
            example = slice(row, row + 1)
            stopped = model(batch.memory[example], int(horizons[row]) if jitter else steps)
            loss = rollout_loss(stopped, batch.target[example], batch.mask[example], trainer.config.log_eps)
            entropy = model(batch.memory[example], steps, with_entropy=True).choice_entropy.mean()
            per_example.append(loss - SETTINGS["entropy_bonus"] * entropy)
    if jitter:
        assert len({int(h) for *_, horizons in batches for h in horizons}) > 2  # the horizons vary
    model.zero_grad()
    torch.stack(per_example).mean().backward()
    expected = [b - SETTINGS["lr"] * p.grad for b, p in zip(before, model.parameters())]

    trainer.train_step()
    moved = [(b - p.detach()).abs().max() for b, p in zip(before, model.parameters())]
    assert max(moved) > 1e-4
    for want, got in zip(expected, model.parameters()):
        torch.testing.assert_close(got.detach(), want, rtol=1e-4, atol=1e-6)
