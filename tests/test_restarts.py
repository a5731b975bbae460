"""Restarts within a run (restart_every, restart_above, stop_when_solved): when and to what a run
starts again, and when it stops."""

import pytest
import torch

from nram.model import NRAM
from training.config import TrainConfig
from training.trainer import RESTART_SEED_OFFSET, Trainer

SMALL = dict(task="access", min_length=2, max_length=4, timesteps=3, timesteps_per_length=0.0, num_registers=2,
             hidden_size=16, batch_size=8, log_every=2, eval_every=100, eval_examples=16, checkpoint_every=100,
             entropy_bonus=0.1, entropy_decay=0.9, curriculum="zaremba")


def trained(tmp_path, steps=4, budget=100, **settings):
    """A trainer of ``budget`` steps after ``steps`` training steps."""
    trainer = Trainer(TrainConfig(**{**SMALL, **settings}, steps=budget), tmp_path, progress=False)
    for _ in range(steps):
        trainer.train_step()
    return trainer


def test_a_stuck_run_starts_again_from_fresh_weights_optimizer_and_schedules(tmp_path):
    trainer = trained(tmp_path, restart_every=4, restart_above=0.0)
    trainer.curriculum.level = 3
    trainer.check_attempt()
    assert trainer.counters["solved"] == 0
    torch.manual_seed(trainer.config.seed + RESTART_SEED_OFFSET)  # restart number 1
    fresh = NRAM(trainer.config.machine_config()).state_dict()
    assert all(torch.equal(value, trainer.model.state_dict()[name]) for name, value in fresh.items())
    assert trainer.optimizer.state_dict()["state"] == {}
    assert trainer.curriculum_level == SMALL["min_length"]
    assert trainer.counters["restarts"] == 1 and trainer.counters["started_at"] == 4
    assert trainer.counters["entropy_weight"] == SMALL["entropy_bonus"]
    assert trainer.gradient_noise_std() == trainer.config.gradient_noise ** 0.5  # t = 0 again
    trainer.check_attempt()
    assert trainer.counters["restarts"] == 1  # the new attempt has not ended yet
    trainer.step += 4
    trainer.check_attempt()
    assert trainer.counters["restarts"] == 2  # a new seed each time
    assert not torch.equal(trainer.model.state_dict()["controller.readout.weight"], fresh["controller.readout.weight"])


def test_a_run_at_or_below_the_threshold_carries_on(tmp_path):
    trainer = trained(tmp_path, restart_every=4, restart_above=1.0)
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    trainer.check_attempt()
    assert all(torch.equal(value, trainer.model.state_dict()[name]) for name, value in before.items())
    assert trainer.counters["restarts"] == 0 and trainer.counters["solved"] == 1


def test_the_check_scores_every_training_length_whatever_the_curriculum_level(tmp_path, monkeypatch):
    trainer = trained(tmp_path, restart_every=4)
    assert trainer.curriculum_level == SMALL["min_length"]
    asked = []
    monkeypatch.setattr(trainer, "evaluate", lambda lengths: asked.extend(lengths) or
                        [{"cell_error": 0.1 * n} for n in lengths])
    assert trainer.training_error() == pytest.approx(0.3)  # mean of 0.2, 0.3, 0.4
    assert asked == [2, 3, 4]


def test_a_stuck_run_whose_steps_are_spent_does_not_restart(tmp_path):
    trainer = trained(tmp_path, steps=4, budget=4, restart_every=4, restart_above=0.0)
    trainer.check_attempt()
    assert trainer.counters["restarts"] == 0 and trainer.counters["solved"] == 0


def test_a_budget_that_ended_on_a_check_restarts_on_resume_as_the_longer_run_did(tmp_path):
    settings = dict(SMALL, restart_every=3, restart_above=0.0)
    straight = Trainer(TrainConfig(**settings, steps=6), tmp_path / "straight", progress=False)
    straight.train()
    Trainer(TrainConfig(**settings, steps=3), tmp_path / "split", progress=False).train()
    resumed = Trainer(TrainConfig(**settings, steps=6), tmp_path / "split", resume=True, progress=False)
    resumed.train()
    assert straight.counters["restarts"] == resumed.counters["restarts"] == 1
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_stop_when_solved_ends_the_run_at_the_first_check_that_passes_and_resume_keeps_it_ended(tmp_path):
    settings = dict(SMALL, restart_every=3, restart_above=1.0, stop_when_solved=True)
    trainer = Trainer(TrainConfig(**settings, steps=10), tmp_path, progress=False)
    trainer.train()
    assert trainer.step == 3 and trainer.counters["solved"] == 1 and trainer.counters["restarts"] == 0
    resumed = Trainer(TrainConfig(**settings, steps=10), tmp_path, resume=True, progress=False)
    resumed.train()
    assert resumed.step == 3


def test_a_run_that_is_never_solved_trains_to_its_step_budget(tmp_path):
    settings = dict(SMALL, restart_every=3, restart_above=0.0, stop_when_solved=True)
    trainer = Trainer(TrainConfig(**settings, steps=7), tmp_path, progress=False)
    trainer.train()
    assert trainer.step == 7 and trainer.counters["restarts"] == 2 and trainer.counters["solved"] == 0


def test_stop_when_solved_without_restarts_checks_at_evaluations(tmp_path):
    settings = dict(SMALL, restart_above=1.0, stop_when_solved=True, eval_every=3)
    trainer = Trainer(TrainConfig(**settings, steps=10), tmp_path, progress=False)
    trainer.train()
    assert trainer.step == 3 and trainer.counters["solved"] == 1 and trainer.counters["restarts"] == 0


def test_the_loop_restarts_every_restart_every_steps_and_resumes_bit_for_bit(tmp_path):
    settings = dict(SMALL, restart_every=3, restart_above=0.0, gradient_noise=0.05)
    straight = Trainer(TrainConfig(**settings, steps=10), tmp_path / "straight", progress=False)
    straight.train()
    assert straight.counters["restarts"] == 3  # at steps 3, 6 and 9
    Trainer(TrainConfig(**settings, steps=5), tmp_path / "split", progress=False).train()
    resumed = Trainer(TrainConfig(**settings, steps=10), tmp_path / "split", resume=True, progress=False)
    resumed.train()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert resumed.counters["restarts"] == 3


def test_stop_when_solved_also_checks_at_every_evaluation_without_restarting_there(tmp_path):
    settings = dict(SMALL, restart_every=6, restart_above=1.0, stop_when_solved=True, eval_every=2)
    trainer = Trainer(TrainConfig(**settings, steps=10), tmp_path, progress=False)
    trainer.train()
    assert trainer.step == 2 and trainer.counters["solved"] == 1  # exact at the first evaluation: stops there
    stuck = Trainer(TrainConfig(**{**settings, "restart_above": 0.0}, steps=5), tmp_path / "stuck", progress=False)
    stuck.train()
    assert stuck.step == 5 and stuck.counters["restarts"] == 0  # evaluations at 2 and 4 end no attempt
