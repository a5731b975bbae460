"""A checkpoint's controller scores the same in the gymnasium env as the discrete machine."""

import gymnasium as gym
import pytest
import torch

import tasks  # noqa: F401  (registers the environments)
from nram.discrete import run_discrete
from nram.model import NRAM, MachineConfig
from training.policy import ControllerPolicy


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
