"""batch_by_length: every length of a batch trains at its own M(n) and T(n), and one step
follows the gradient of the mean loss over all examples."""

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
    assert sorted(int(n) for group, _, _ in batches for n in group) == sorted(lengths.tolist())
    assert len(batches) == len(torch.unique(lengths)) > 1
    for group, batch, steps in batches:
        n = int(group[0])
        assert (group == n).all()
        assert batch.memory.shape == (group.numel(), trainer.config.memory_size_for(n))
        assert steps == trainer.config.timesteps_for(n)


def test_longest_input_sets_memory_and_time_by_default(tmp_path):
    trainer = Trainer(TrainConfig(**{**SETTINGS, "batch_by_length": False}), tmp_path, progress=False)
    lengths, [(group, batch, steps)] = sampled_batches(trainer)
    longest = int(lengths.max())
    assert torch.equal(group, lengths)
    assert batch.memory.shape == (lengths.numel(), trainer.config.memory_size_for(longest))
    assert steps == trainer.config.timesteps_for(longest)


def test_one_step_follows_the_mean_gradient_of_examples_run_one_at_a_time(tmp_path):
    trainer = Trainer(TrainConfig(**SETTINGS), tmp_path, progress=False)
    _, batches = sampled_batches(trainer)
    model = trainer.model
    before = [p.detach().clone() for p in model.parameters()]

    per_example = []
    for _, batch, steps in batches:
        for row in range(batch.memory.shape[0]):
            rollout = model(batch.memory[row:row + 1], steps, with_entropy=True)
            loss = rollout_loss(rollout, batch.target[row:row + 1], batch.mask[row:row + 1], trainer.config.log_eps)
            per_example.append(loss - SETTINGS["entropy_bonus"] * rollout.choice_entropy.mean())
    model.zero_grad()
    torch.stack(per_example).mean().backward()
    expected = [b - SETTINGS["lr"] * p.grad for b, p in zip(before, model.parameters())]

    trainer.train_step()
    moved = [(b - p.detach()).abs().max() for b, p in zip(before, model.parameters())]
    assert max(moved) > 1e-4
    for want, got in zip(expected, model.parameters()):
        torch.testing.assert_close(got.detach(), want, rtol=1e-4, atol=1e-6)
