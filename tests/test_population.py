"""Populations: P members as one vectorised model train exactly as P separate runs, resume
exactly, save their best member as an ordinary checkpoint, and refuse bad settings up front."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import training.population
from nram.controller import member_linear
from nram.model import NRAM, MachineConfig, Rollout, rollout_loss
from nram.population import PopulationNRAM
from training.checkpoint import load_checkpoint
from training.cli import main
from training.config import TrainConfig
from training.evaluate import evaluate
from training.optim.members import MemberAdam, MemberSGD
from training.population import PERTURBATIONS, PopulationTrainer
from training.trainer import RESTART_SEED_OFFSET, Trainer, check_memory_fits

SMALL = dict(task="listk", min_length=1, max_length=3, memory_extra=2, timesteps=3, num_registers=3,
             hidden_size=16, batch_size=8, lr=0.01, gradient_noise=0.05, entropy_bonus=0.05, weight_decay=0.01,
             log_every=2, eval_every=100, eval_examples=16, checkpoint_every=100)
CONTROLLERS = [("mlp", {}), ("lstm", {}), ("gated", {}), ("gated", {"gating": "decoupled"}), ("table", {})]


@pytest.mark.parametrize("bias", [True, False])
def test_member_linear_is_each_members_own_linear_map(bias):
    generator = torch.Generator().manual_seed(0)
    inputs, weight = torch.randn(4, 6, 3, generator=generator), torch.randn(4, 5, 3, generator=generator)
    biases = torch.randn(4, 5, generator=generator) if bias else None
    expected = torch.stack([F.linear(inputs[i], weight[i], biases[i] if bias else None) for i in range(4)])
    assert torch.allclose(member_linear(inputs, weight, biases), expected, atol=1e-6)


@pytest.mark.parametrize("kind, options", CONTROLLERS)
def test_mlp_and_lstm_members_run_as_batched_matmuls_and_the_rest_through_vmap(kind, options):
    config = MachineConfig(num_registers=3, hidden_size=16, controller=kind, controller_options=options)
    assert PopulationNRAM(config, 2).controller.member_axis == (kind in ("mlp", "lstm"))


@pytest.mark.parametrize("kind, options", CONTROLLERS)
def test_a_population_runs_each_member_on_its_own_weights(kind, options):
    config = MachineConfig(num_registers=3, hidden_size=16, controller=kind, controller_options=options)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(NRAM(config).double())
    population = PopulationNRAM(config, 3).double()
    for index, model in enumerate(models):
        population.load_member(index, model.state_dict())
    memory = torch.randint(0, 9, (3 * 4, 9))
    rollout = population(memory, 4)
    total = 0.0
    for index, model in enumerate(models):
        rows = slice(4 * index, 4 * (index + 1))
        own = model(memory[rows], 4)
        torch.testing.assert_close(rollout.memories[:, rows], own.memories, rtol=0, atol=1e-12)
        torch.testing.assert_close(rollout.stop_probs[:, rows], own.stop_probs, rtol=0, atol=1e-12)
        rollout_loss(own, memory[rows], memory[rows] > 0).backward()
        total = total + rollout_loss(Rollout(rollout.memories[:, rows], rollout.stop_probs[:, rows]),
                                     memory[rows], memory[rows] > 0)
    total.backward()
    stacked = dict(population.named_parameters())
    for index, model in enumerate(models):
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                grad = stacked[name.replace("controller.", "controller.stacked.", 1)].grad[index]
                torch.testing.assert_close(grad, parameter.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind, optimizer, extra", [
    ("mlp", "adam", {}), ("lstm", "sgd", {}), ("gated", "adam", {}), ("table", "adam", {}),
    ("lstm", "adam", {"gumbel_temperature": 0.5}), ("lstm", "adam", {"timesteps_jitter": 1.0}),
    ("mlp", "adam", {"entropy_bonus": 0.0})])  # the single runs train in one C call per rollout
def test_p_members_train_as_p_separate_runs_with_the_same_seeds(tmp_path, kind, optimizer, extra):
    base = TrainConfig(**{**SMALL, **extra}, steps=6, controller=kind, optimizer=optimizer,
                       momentum=0.5 if optimizer == "sgd" else 0.0)
    population = PopulationTrainer(dataclasses.replace(base, population=3), tmp_path / "population", progress=False)
    population.train()
    for index in range(3):
        single = Trainer(dataclasses.replace(base, seed=index), tmp_path / f"seed{index}", progress=False)
        single.train()
        member = population.model.member_state(index)
        for name, value in single.model.state_dict().items():
            torch.testing.assert_close(member[name], value, rtol=0, atol=1e-5)
        assert population.members[index].curriculum.state_dict() == single.curriculum.state_dict()
    assert population.step == 6


def test_member_adam_and_sgd_follow_torch_per_member_with_their_own_learning_rates():
    torch.manual_seed(0)
    weights = torch.randn(3, 4, 5, dtype=torch.float64)
    lrs = torch.tensor([0.1, 0.01, 0.001], dtype=torch.float64)
    for member_class, torch_class, extra in ((MemberAdam, torch.optim.Adam, {}),
                                             (MemberSGD, torch.optim.SGD, {"momentum": 0.9})):
        stacked = weights.clone().requires_grad_()
        optimizer = member_class([stacked], lr=lrs, weight_decay=0.1, **extra)
        singles = [weights[i].clone().requires_grad_() for i in range(3)]
        references = [torch_class([p], lr=float(lrs[i]), weight_decay=0.1, **extra) for i, p in enumerate(singles)]
        for step in range(5):
            grads = torch.randn(3, 4, 5, dtype=torch.float64)
            stacked.grad = grads.clone()
            active = torch.tensor([True, step != 2, True])  # member 1 skips step 2
            optimizer.step(active=active)
            for i, (p, reference) in enumerate(zip(singles, references)):
                if active[i]:
                    p.grad = grads[i].clone()
                    reference.step()
        for i, p in enumerate(singles):
            torch.testing.assert_close(stacked[i], p, rtol=0, atol=1e-12)


@pytest.mark.parametrize("split", [5, 4])  # 4: the budget ends on an exploitation step
def test_a_population_resumes_bit_for_bit(tmp_path, split):
    settings = dict(SMALL, population=3, exploit_every=2, restart_every=3, restart_above=0.0, check_discrete=True,
                    gumbel_temperature=0.5, population_ranges={"lr": [0.003, 0.03], "entropy_bonus": [0.01, 0.1],
                                                               "gumbel_temperature": [0.3, 1.0]})
    straight = PopulationTrainer(TrainConfig(**settings, steps=8), tmp_path / "straight", progress=False)
    straight.train()
    PopulationTrainer(TrainConfig(**settings, steps=split), tmp_path / "split", progress=False).train()
    resumed = PopulationTrainer(TrainConfig(**settings, steps=8), tmp_path / "split", resume=True, progress=False)
    assert resumed.step == split
    resumed.train()
    assert straight.counters == resumed.counters and straight.counters["exploited"] > 0
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [m.config for m in straight.members] == [m.config for m in resumed.members]


def test_restart_and_copy_reset_or_share_one_member_only(tmp_path):
    trainer = PopulationTrainer(TrainConfig(**SMALL, population=3, steps=10, population_ranges={"lr": [0.001, 0.1]}),
                                tmp_path, progress=False)
    for _ in range(2):
        trainer.train_step()
    before = [trainer.model.member_state(i) for i in range(3)]
    trainer.restart_member(2)
    torch.manual_seed(trainer.members[2].config.seed + RESTART_SEED_OFFSET)
    fresh = NRAM(trainer.config.machine_config()).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in trainer.model.member_state(2).items())
    assert trainer.optimizer.param_groups[0]["step"].tolist() == [2, 2, 0]
    trainer.copy_member(0, 1)
    assert all(torch.equal(before[0][k], v) for k, v in trainer.model.member_state(1).items())
    assert all(torch.equal(before[0][k], v) for k, v in trainer.model.member_state(0).items())
    ratio = trainer.members[1].config.lr / trainer.members[0].config.lr
    assert any(ratio == pytest.approx(f) for f in PERTURBATIONS) or trainer.members[1].config.lr in (0.001, 0.1)
    assert float(trainer.optimizer.param_groups[0]["lr"][1]) == trainer.members[1].config.lr
    assert trainer.members[1].config.seed == SMALL.get("seed", 0) + 1  # keeps its own seed and batches


@pytest.mark.parametrize("fresh, restarted", [(0.5, [5, 7]), (0.0, []), (1.0, [4, 5, 6, 7])])
def test_exploitation_replaces_the_worst_by_fresh_weights_in_the_share_asked_and_copies_the_rest(tmp_path, fresh,
                                                                                              restarted):
    trainer = PopulationTrainer(TrainConfig(**SMALL, population=8, exploit_fraction=0.5, exploit_fresh=fresh),
                                tmp_path, progress=False)
    trainer.train_step()
    before = [trainer.model.member_state(i) for i in range(8)]
    trainer.exploit_and_explore(torch.arange(8.0))  # member i has error i: 0-3 are the best half, 4-7 the worst
    for index in range(8):
        state = trainer.model.member_state(index)
        kept = all(torch.equal(before[index][k], v) for k, v in state.items())
        copied = [source for source in range(4) if all(torch.equal(before[source][k], v) for k, v in state.items())]
        if index < 4:
            assert kept, index
        elif index in restarted:
            assert trainer.members[index].counters["restarts"] == 1 and not kept and not copied, index
        else:
            assert trainer.members[index].counters["restarts"] == 0 and len(copied) == 1, index
    assert trainer.counters["restarts"] == len(restarted) and trainer.counters["exploited"] == 4 - len(restarted)


def test_a_population_scores_its_best_member_and_rescores_when_another_is_best(tmp_path, monkeypatch):
    trainer = PopulationTrainer(TrainConfig(**SMALL, population=3), tmp_path, progress=False)
    trainer.train_step()
    scored_seeds = []
    monkeypatch.setattr(training.population, "evaluate", lambda model, task, lengths, **options:
                        scored_seeds.append(options["seed"]) or evaluate(model, task, lengths, **options))
    for best in (0, 2, 2):
        trainer.best = best
        expected = evaluate(trainer.model.member_model(best), trainer.task, [2, 3],
                            memory_size_for=trainer.config.memory_size_for, timesteps_for=trainer.config.timesteps_for,
                            examples=SMALL["eval_examples"], seed=trainer.members[best].config.seed)
        assert trainer.evaluate([2, 3]) == expected, best
    assert scored_seeds == [trainer.members[0].config.seed, trainer.members[2].config.seed]


def test_the_run_stops_at_the_first_solved_member_and_saves_it_as_an_ordinary_checkpoint(tmp_path, capsys):
    settings = dict(SMALL, population=3, restart_every=4, restart_above=1.0, stop_when_solved=True, steps=20)
    trainer = PopulationTrainer(TrainConfig(**settings), tmp_path, progress=False)
    trainer.train()
    assert trainer.step == 4 and trainer.counters["solved"] == 1
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["config"]["population"] == 1 and payload["config"]["seed"] == trainer.best
    assert main(["eval", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--lengths", "2", "--examples", "8"]) == 0
    ordinary = Trainer(TrainConfig.from_dict({**payload["config"], "steps": 6, "stop_when_solved": False}), tmp_path,
                       resume=True, progress=False)
    assert ordinary.step == 4
    ordinary.train()
    assert ordinary.step == 6


@pytest.mark.parametrize("setting, message", [
    ({"population": 0}, "population must be >= 1"),
    ({"population": 3, "population_ranges": {"lr": [0.1]}}, r"population_ranges.lr must be \[low, high\]"),
    ({"population": 3, "population_ranges": {"lr": [0.1, 0.01]}}, "0 < low <= high"),
    ({"population": 3, "population_ranges": {"momentum": [0.1, 0.2]}}, "unknown setting 'momentum'"),
    ({"population": 1, "population_ranges": {"lr": [0.01, 0.1]}}, "needs population >= 2"),
    ({"population": 3, "exploit_fraction": 0.9}, "exploit_fraction"),
    ({"population": 3, "exploit_fresh": 1.5}, "exploit_fresh"),
])
def test_bad_population_settings_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**SMALL, **setting}).validate()


def test_a_population_too_large_for_memory_is_refused_before_any_work(tmp_path, capsys):
    config = TrainConfig(**SMALL, population=4)
    check_memory_fits(config, budget_bytes=1 << 30)
    with pytest.raises(ValueError, match="needs about .* GiB per step"):
        check_memory_fits(config, budget_bytes=1 << 10)
    assert main(["train", "--task", "listk", "--population", "100000000", "--out", str(tmp_path / "x")]) == 2
    assert "GiB per step" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["train", "--task", "listk", "--population", "0", "--out", str(tmp_path / "y")]) == 2
    assert "population must be >= 1" in capsys.readouterr().err


def test_populations_refuse_what_they_cannot_train(tmp_path):
    for setting, message in (({"optimizer": "rbd"}, "trains with adam or sgd"),
                             ({"dropout": "batchwise"}, "no dropout"),
                             ({"batch_by_length": False}, "batch_by_length")):
        with pytest.raises(ValueError, match=message):
            PopulationTrainer(TrainConfig(**{**SMALL, "population": 2, **setting}), tmp_path, progress=False)


def test_a_checkpoint_written_at_a_check_resumes_without_checking_twice(tmp_path):
    settings = dict(SMALL, population=4, exploit_every=2, steps=8, population_ranges={"lr": [0.003, 0.03]})
    straight = PopulationTrainer(TrainConfig(**settings), tmp_path / "straight", progress=False)
    straight.train()
    first = PopulationTrainer(TrainConfig(**settings), tmp_path / "split", progress=False)
    for _ in range(4):
        first.train_step()
        if first.check_due():
            first.check_attempt()
    first.save()  # as the loop's periodic checkpoint after the check at step 4 (or a signal there)
    resumed = PopulationTrainer(TrainConfig(**settings), tmp_path / "split", resume=True, progress=False)
    resumed.train()
    assert resumed.counters["exploited"] == straight.counters["exploited"]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_population_trains_on_cuda_as_on_the_cpu(tmp_path):
    settings = dict(SMALL, population=3, gradient_noise=0.0, steps=3)
    on_cpu = PopulationTrainer(TrainConfig(**settings), tmp_path / "cpu", progress=False)
    on_cuda = PopulationTrainer(TrainConfig(**settings, device="cuda"), tmp_path / "cuda", progress=False)
    for trainer in (on_cpu, on_cuda):
        for _ in range(3):
            trainer.train_step()
    for name, value in on_cpu.model.state_dict().items():
        torch.testing.assert_close(on_cuda.model.state_dict()[name].cpu(), value, rtol=0, atol=1e-4)
