"""Gymnasium environments: the env checker, spaces, seeding, and hand-written programs that solve tasks."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import tasks
from nram.gates import GATE_ARITY, GATE_NAMES
from tasks import TASK_NAMES, NRAMEnv, get_task

ENV_IDS = [f"nram/{title}-v0" for title in ("Access", "Increment", "Copy", "Reverse", "Swap", "Permutation",
                                            "ListK", "ListSearch", "Merge", "WalkBST")]


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("observation", ["flags", "full"])
def test_env_checker_passes_without_warnings(env_id, observation):
    env = gym.make(env_id, length=3, observation=observation, render_mode="ansi")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    env.close()


def test_every_task_is_registered():
    assert [gym.spec(env_id).kwargs["task"] for env_id in ENV_IDS] == list(TASK_NAMES)
    tasks.register_envs()  # registering again changes nothing


def test_spaces_follow_the_circuit():
    registers = 3
    gates = ("read", "zero", "inc", "add", "write")
    env = NRAMEnv("copy", num_registers=registers, gates=gates)
    expected = [registers + i for i, name in enumerate(gates) for _ in range(GATE_ARITY[name])]
    expected += [registers + len(gates)] * registers + [2]
    assert env.action_space.nvec.tolist() == expected == [3, 5, 6, 6, 7, 7, 8, 8, 8, 2]
    assert env.observation_space == gym.spaces.MultiBinary(registers)
    full = NRAMEnv("copy", length=2, memory_size=9, observation="full")
    assert full.observation_space["memory"].nvec.tolist() == [9] * 9
    assert full.observation_space["registers"].nvec.tolist() == [9] * 4
    default = NRAMEnv("access")
    assert default.layout.gates == GATE_NAMES and len(default.action_space.nvec) == \
        sum(GATE_ARITY.values()) + 4 + 1


def test_reset_seed_and_options():
    env = NRAMEnv("copy")
    _, info = env.reset(seed=3, options={"length": 6})
    assert info["memory"].shape == (13,) and info["memory"][0] == 7 and env.episode_steps == 26
    _, again = env.reset(seed=3, options={"length": 6})
    assert np.array_equal(info["memory"], again["memory"])
    _, info = env.reset(seed=3, options={"length": 2, "memory_size": 20})
    assert info["memory"].shape == (20,) and info["memory"][0] == 3
    assert info["target"].shape == info["mask"].shape == (20,) and info["mask"].sum() == 2
    # Randomness only from np_random: the same seed, then unseeded resets, replay exactly.
    first, second = NRAMEnv("listk", length=5), NRAMEnv("listk", length=5)
    first.reset(seed=11), second.reset(seed=11)
    assert np.array_equal(first.reset()[1]["memory"], second.reset()[1]["memory"])
    assert not np.array_equal(first.reset()[1]["memory"], first.reset()[1]["memory"])
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"size": 3})
    with pytest.raises(ValueError, match="needs memory_size >= 13"):
        env.reset(options={"length": 6, "memory_size": 12})
    full = NRAMEnv("copy", length=2, observation="full")
    with pytest.raises(ValueError, match="fixed at 5"):
        full.reset(options={"memory_size": 9})


def test_full_observation_shows_registers_and_memory():
    env = NRAMEnv("access", length=3, memory_size=8, observation="full")
    obs, info = env.reset(seed=0)
    assert np.array_equal(obs["memory"], info["memory"]) and obs["registers"].tolist() == [0] * 4
    obs, *_ = env.step(env.encode_action({"read": ["r0"], "write": ["zero", "read"]}, {1: "read", 2: "one"}))
    assert obs["registers"].tolist() == [0, info["memory"][0], 1, 0]
    assert obs["is_zero"].tolist() == [1, int(info["memory"][0] == 0), 0, 1]


def access_program(env: NRAMEnv, step: int) -> np.ndarray:
    """Step 0: r0 := READ(0) + 1 = k + 1. Step 1: cell 0 := READ(k + 1) = A[k], stop."""
    if step == 0:
        return env.encode_action({"read": ["r0"], "inc": ["read"], "write": ["zero", "read"]}, {0: "inc"})
    return env.encode_action({"read": ["r0"], "write": ["zero", "read"]}, stop=True)


def copy_program(env: NRAMEnv, is_zero: np.ndarray) -> np.ndarray:
    """A loop that looks only at the register is-zero flags, as an NRAM controller does.

    Set-up (all registers 0): r0 := 1 (source), r1 := p = READ(0) (destination), r3 := p - 1 = n,
    r2 := p - 2 = n - 1 (copies left after the next). Loop: WRITE(r1, READ(r0)), r0 += 1,
    r1 += 1, r2 := r3 - r0; stop on the step that starts with r2 = 0.
    """
    if is_zero[0]:
        return env.encode_action({"read": ["r0"], "sub": ["read", "two"], "dec": ["read"],
                                  "write": ["zero", "read"]}, {0: "one", 1: "read", 2: "sub", 3: "dec"})
    return env.encode_action({"read": ["r0"], "inc": ["r0"], "add": ["r1", "one"], "sub": ["r3", "inc"],
                              "write": ["r1", "read"]}, {0: "inc", 1: "add", 2: "sub"}, stop=bool(is_zero[2]))


@pytest.mark.parametrize("length", [1, 2, 5, 9])
def test_hand_written_access_solves_every_seed(length):
    env = gym.make("nram/Access-v0", length=length)
    for seed in range(25):
        env.reset(seed=seed, options={"memory_size": length + 2 + seed % 3})
        _, reward, terminated, truncated, _ = env.step(access_program(env.unwrapped, 0))
        assert (reward, terminated, truncated) == (0.0, False, False)
        _, reward, terminated, truncated, info = env.step(access_program(env.unwrapped, 1))
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert np.array_equal(info["memory"], info["target"])


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_hand_written_copy_loop_solves_copy_only(task):
    for length in (1, 2, 3, 7):
        env = gym.make(f"nram/{get_task(task).title}-v0", length=length)
        for seed in range(15):
            is_zero, _ = env.reset(seed=seed)
            rewards, done = [], False
            while not done:
                is_zero, reward, terminated, truncated, info = env.step(copy_program(env.unwrapped, is_zero))
                rewards.append(reward)
                done = terminated or truncated
            assert terminated and len(rewards) == length + 1 and rewards[:-1] == [0.0] * length
            if task == "copy":
                assert rewards[-1] == 1.0 and np.array_equal(info["memory"], info["target"])
            else:  # the reward is the fraction of scored cells right: palindromic positions only
                target, mask = info["target"], info["mask"]
                assert rewards[-1] == pytest.approx((info["memory"] == target)[mask].mean())


def test_truncation_scores_the_memory_reached():
    env = NRAMEnv("increment", length=4, max_steps=3)
    env.reset(seed=0)
    noop = env.encode_action({"read": ["r0"], "write": ["zero", "read"]})
    results = [env.step(noop)[1:4] for _ in range(3)]
    assert results[:2] == [(0.0, False, False)] * 2
    assert results[2] == (0.0, False, True)  # nothing incremented
    env.reset(seed=0)
    memory = env.memory.clone()
    bump = env.encode_action({"read": ["r0"], "inc": ["read"], "write": ["r0", "inc"]}, stop=True)
    _, reward, terminated, _, info = env.step(bump)  # increments cell 0 only
    assert terminated and reward == 0.25 and info["memory"][0] == (memory[0, 0] + 1) % 5


def test_invalid_actions_and_arguments_raise():
    env = NRAMEnv("access")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    bad = env.action_space.nvec.copy()
    with pytest.raises(ValueError, match="invalid action"):
        env.step(bad)
    with pytest.raises(ValueError, match="not available"):
        env.encode_action({"read": ["write"]})
    with pytest.raises(ValueError, match="observation"):
        NRAMEnv("access", observation="pixels")
    with pytest.raises(ValueError, match="render_mode"):
        NRAMEnv("access", render_mode="human")
    with pytest.raises(ValueError, match="unknown task"):
        NRAMEnv("sorting")


def test_render_ansi():
    env = gym.make("nram/Copy-v0", length=2, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert text.startswith("Copy n=2 M=5 step 0/10") and "registers r0=0" in text
    memory_line = next(line for line in text.splitlines() if line.startswith("memory"))
    assert memory_line.split()[1:] == [str(c) for c in env.unwrapped.memory[0].tolist()]


def test_make_vec_runs_programs_in_parallel():
    envs = gym.make_vec("nram/Access-v0", num_envs=3, length=4)
    obs, info = envs.reset(seed=5)
    assert obs.shape == (3, 4) and info["memory"].shape == (3, 6)
    single = envs.envs[0].unwrapped
    envs.step(np.stack([access_program(single, 0)] * 3))
    _, rewards, terminated, truncated, _ = envs.step(np.stack([access_program(single, 1)] * 3))
    assert rewards.tolist() == [1.0] * 3 and terminated.all() and not truncated.any()
    envs.close()


def test_an_action_that_is_not_whole_numbers_is_refused_rather_than_truncated():
    env = gym.make("nram/Copy-v0", length=3).unwrapped
    env.reset(seed=0)
    action = env.encode_action(stop=True).astype(np.float64)
    action[-1] = 1.9  # would pass as 1 in the space check, yet not equal 1: a stop that does not stop
    with pytest.raises(ValueError, match="whole numbers"):
        env.step(action)
    assert env.step(env.encode_action(stop=True).astype(np.float64))[2]  # 1.0 is a stop


@pytest.mark.parametrize("register", [-1, 4, "r0"])
def test_encode_action_refuses_a_register_that_does_not_exist(register):
    env = gym.make("nram/Copy-v0", length=3, num_registers=4).unwrapped
    with pytest.raises(ValueError, match="no register"):
        env.encode_action(register_sources={register: 0})
