"""The training rollout in one C call (``nram_train_mlp``) against the PyTorch rollout, float64."""

import dataclasses

import pytest
import torch

from nram import native
from nram.model import NRAM, MachineConfig, example_losses
from training.config import TrainConfig
from training.trainer import Trainer

pytestmark = pytest.mark.skipif(native.library("double") is None, reason="no C compiler")

SUBSET = ("read", "zero", "one", "inc", "add", "lt", "eq", "min")  # no WRITE: memory passes through


@pytest.mark.parametrize("gates, steps, batch, hidden", [(None, 4, 70, 8), (SUBSET, 3, 5, 8), (None, 1, 3, 8),
                                                          (None, 2, 9, 40)])
def test_one_call_gives_the_pytorch_losses_output_and_gradients(monkeypatch, gates, steps, batch, hidden):
    """70 examples span two tiles; T = 1 has no stop logit in play; the reference runs without C.
    A hidden layer of 40 runs the dense loops' chunks of 16 float64 outputs and their remainder."""
    torch.manual_seed(0)
    config = MachineConfig(num_registers=3, hidden_size=hidden, **({} if gates is None else {"gates": gates}))
    model = NRAM(config).double()
    memory_size = 7
    memory = torch.randint(0, memory_size, (batch, memory_size))
    target = torch.randint(0, memory_size, (batch, memory_size))
    mask = torch.rand(batch, memory_size) < 0.5
    scale = 0.37
    monkeypatch.setenv("NRAM_NATIVE", "0")
    rollout = model(memory, steps)
    losses = example_losses(rollout, target, mask, 1e-6)
    (scale * losses.sum()).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    monkeypatch.delenv("NRAM_NATIVE")
    earlier = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = earlier[name].clone()  # the call adds to what is there
    native_losses, output = model.train_rollout_natively(memory, target, mask, steps, scale=scale, eps=1e-6)
    torch.testing.assert_close(native_losses, losses.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(output, rollout.output_memory().detach(), rtol=0, atol=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad - earlier[name], expected[name], rtol=0, atol=1e-10, msg=name)


def test_a_value_out_of_range_is_refused_before_any_gradient_is_added():
    """The bad target is in the second tile of 64 examples: the first tile adds nothing either."""
    model = NRAM(MachineConfig(num_registers=2, hidden_size=8))
    memory = torch.zeros(70, 5, dtype=torch.long)
    target = memory.clone()
    target[69, 0] = 5
    with pytest.raises(ValueError, match="outside 0..4"):
        model.train_rollout_natively(memory, target, torch.ones(70, 5, dtype=torch.bool), 2, scale=1.0, eps=1e-6)
    assert all(not p.grad.any() for p in model.parameters())


def test_shapes_that_do_not_match_and_controllers_it_cannot_run_are_refused():
    model = NRAM(MachineConfig(num_registers=2, hidden_size=8))
    memory = torch.zeros(3, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"must all be \[B, M\]"):
        model.train_rollout_natively(memory, memory[:, :4], torch.ones(3, 5, dtype=torch.bool), 2, scale=1.0,
                                     eps=1e-6)
    lstm = NRAM(MachineConfig(num_registers=2, hidden_size=8, controller="lstm"))
    with pytest.raises(ValueError, match="plain MLP controller"):
        lstm.train_rollout_natively(memory, memory, torch.ones(3, 5, dtype=torch.bool), 2, scale=1.0, eps=1e-6)


SMALL = dict(task="access", min_length=2, max_length=4, timesteps=3, timesteps_per_length=0.0, num_registers=2,
             hidden_size=16, batch_size=8, lr=0.01, log_every=2, eval_every=100, eval_examples=16,
             checkpoint_every=100, steps=5)


@pytest.mark.parametrize("settings, native_rollouts", [
    ({}, True), ({"controller": "lstm"}, False), ({"controller": "gated"}, False), ({"controller": "table"}, False),
    ({"dropout": "batchwise", "hidden_size": 32}, False), ({"gumbel_temperature": 1.0}, False),
    ({"timesteps_jitter": 0.5}, False)])
def test_the_trainer_takes_the_one_call_path_where_it_applies(tmp_path, settings, native_rollouts):
    trainer = Trainer(TrainConfig(**{**SMALL, **settings}), tmp_path, progress=False)
    assert trainer.native_rollouts == native_rollouts


def test_training_through_the_one_call_follows_the_pytorch_steps(tmp_path):
    """Five steps over three lengths (rollouts of different M, each weighted by its share). SGD, not
    Adam, so that a gradient off by any factor shows in the weights."""
    config = TrainConfig(**SMALL, optimizer="sgd")
    runs = []
    for native_rollouts in (True, False):
        trainer = Trainer(dataclasses.replace(config), tmp_path / str(native_rollouts), progress=False)
        trainer.native_rollouts = native_rollouts
        trainer.train()
        runs.append(trainer.model.state_dict())
    for name, value in runs[0].items():
        torch.testing.assert_close(value, runs[1][name], rtol=0, atol=1e-4, msg=name)
    assert runs[0].keys() and any((runs[0][k] != runs[1][k]).any() for k in runs[0])  # two paths, rounding apart
