"""A checkpoint's controller scores the same in the gymnasium env as the discrete machine."""

from pathlib import Path

import gymnasium as gym
import pytest
import torch

import tasks  # noqa: F401  (registers the environments)
from nram.discrete import run_discrete
from nram.model import NRAM, MachineConfig
from tasks import get_task
from training.config import default_config_path, load_config
from training.distil import distil_program
from training.evaluate import evaluate
from training.policy import ControllerPolicy
from training.programs import PROGRAMS
from training.trainer import Trainer


ONE_MLP = dict(controller="mlp", population=1, population_ranges={})
"""ListK's shipped circuit as one run with the MLP controller a hand program is distilled into."""


def decisive_model(seed, controller):
    """A random controller with sharp choices and a stop bit that depends on the registers."""
    torch.manual_seed(seed)
    model = NRAM(MachineConfig(num_registers=3, controller=controller))
    with torch.no_grad():
        model.controller.readout.weight.mul_(50.0)
        model.controller.readout.bias.mul_(50.0)
    return model


@pytest.mark.parametrize("controller", ["mlp", "lstm"])
@pytest.mark.parametrize("env_id", ["nram/Access-v0", "nram/Copy-v0", "nram/ListK-v0"])
def test_policy_in_env_scores_like_the_discrete_machine(env_id, controller):
    steps = 6
    env = gym.make(env_id, length=3, num_registers=3, max_steps=steps)
    scores_env, scores_machine, changed = [], [], 0
    for seed in range(12):
        model = decisive_model(seed, controller)
        policy = ControllerPolicy(model)
        observation, info = env.reset(seed=seed)
        memory0 = torch.as_tensor(info["memory"])[None]
        policy.reset()
        done, reward = False, 0.0
        while not done:
            observation, reward, terminated, truncated, info = env.step(policy(observation))
            done = terminated or truncated
        scores_env.append(reward)
        final = run_discrete(model, memory0, steps)[0]
        assert torch.equal(final, torch.as_tensor(info["memory"]))
        changed += not torch.equal(final, memory0[0])
        target, mask = torch.as_tensor(info["target"]), torch.as_tensor(info["mask"])
        scores_machine.append(float(((final == target) & mask).sum() / mask.sum()))
    assert scores_env == scores_machine
    assert changed >= 6  # the random programs really write to memory


def test_an_env_made_from_a_checkpoint_scores_what_eval_discrete_does_at_4x(tmp_path):
    config = load_config(default_config_path("listk"), steps=0, **ONE_MLP)
    trainer = Trainer(config, tmp_path, progress=False)
    distil_program(trainer.model, PROGRAMS["listk"])
    trainer.save()
    policy = ControllerPolicy.from_checkpoint(tmp_path / "checkpoint.pt")
    length = 4 * config.max_length
    env = policy.make_env(length)
    assert env.unwrapped.memory_size == config.memory_size_for(length)
    rewards = []
    for seed in range(100):
        observation, _ = env.reset(seed=seed)
        policy.reset()
        done = False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(policy(observation))
            done = terminated or truncated
        rewards.append(reward)
    (record,) = evaluate(policy.model, get_task("listk"), [length], memory_size_for=config.memory_size_for,
                         timesteps_for=config.timesteps_for, examples=100, discrete=True)
    assert sum(rewards) / len(rewards) == 1 - record["cell_error"] == 1.0
    too_long = gym.make("nram/ListK-v0", length=length, num_registers=config.num_registers,
                        gates=policy.model.layout.gates, memory_size=config.memory_size_for(length))
    observation, _ = too_long.reset(seed=0)  # the env's own default runs 2M steps: the program overshoots
    policy.reset()
    done = False
    while not done:
        observation, reward, terminated, truncated, _ = too_long.step(policy(observation))
        done = terminated or truncated
    assert too_long.unwrapped.steps_taken > config.timesteps_for(length)


def test_make_env_needs_the_runs_config():
    with pytest.raises(ValueError, match="from_checkpoint"):
        ControllerPolicy(decisive_model(0, "mlp")).make_env(4)


def test_the_readme_env_snippet_runs_and_scores_like_eval_discrete(tmp_path, monkeypatch):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Gymnasium environments and checkpoints from Python", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    config = load_config(default_config_path("listk"), steps=0, **ONE_MLP)
    trainer = Trainer(config, tmp_path / "runs" / "copy-seed0", progress=False)
    distil_program(trainer.model, PROGRAMS["listk"])
    trainer.save()
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet.replace("length=24", "length=20"), "README.md", "exec"), namespace)
    assert namespace["rewards"] == [1.0] * 100
