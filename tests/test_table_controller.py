"""The table controller: one column of logits per pattern of zero flags, blended multilinearly.

The pattern weights are checked against enumeration of every pattern, the columns against
the program reader's pattern order, and the gradient against finite differences in float64.
"""

import itertools

import pytest
import torch

from nram.controller import TableController
from nram.model import NRAM, MachineConfig, rollout_loss
from tasks import get_task
from training.config import default_config_path, load_config
from training.distil import distil_program
from training.evaluate import evaluate
from training.programs import PROGRAMS, controller_table, zero_patterns


def enumerated_weights(flags):
    """``[B, 2^R]`` by enumeration: the probability of each pattern of independent zero flags."""
    rows = []
    for example in flags.tolist():
        row = []
        for pattern in itertools.product((0, 1), repeat=len(example)):  # register 0 first, 1 = zero
            probability = 1.0
            for zero, flag in zip(pattern, example):
                probability *= flag if zero else 1 - flag
            row.append(probability)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("registers", [1, 3, 5])
def test_pattern_weights_are_the_probabilities_of_each_pattern(registers):
    flags = torch.rand(7, registers, dtype=torch.float64, generator=torch.Generator().manual_seed(registers))
    weights, state = TableController(registers, 4).double().features(flags)
    assert state is None
    torch.testing.assert_close(weights, enumerated_weights(flags), rtol=0, atol=1e-12)
    torch.testing.assert_close(weights.sum(1), torch.ones(7, dtype=torch.float64), rtol=0, atol=1e-12)


def test_at_sharp_flags_one_column_acts_in_the_program_readers_order():
    controller = TableController(3, 5)
    patterns = zero_patterns(3)
    logits, _ = controller(patterns)
    expected = controller.readout.weight.T + controller.readout.bias
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("task_name", ["listk", "walkbst"])
def test_a_program_written_into_a_table_reads_back_and_solves_its_task(task_name):
    config = load_config(default_config_path(task_name), controller="table")
    torch.manual_seed(0)
    model = NRAM(config.machine_config())
    distil_program(model, PROGRAMS[task_name], margin=12.0)
    table, stops = controller_table(model)
    assert torch.equal(table, PROGRAMS[task_name].choice_table(model.layout)) and not stops.any()
    lengths = [config.min_length, config.max_length, 4 * config.max_length]
    for discrete in (True, False):
        records = evaluate(model, get_task(task_name), lengths, memory_size_for=config.memory_size_for,
                           timesteps_for=config.timesteps_for, examples=100, discrete=discrete)
        assert [record["cell_error"] for record in records] == [0.0] * len(lengths), discrete


def test_the_machines_gradient_through_a_table_matches_finite_differences():
    torch.manual_seed(1)
    model = NRAM(MachineConfig(num_registers=2, controller="table")).double()
    memory = torch.randint(0, 6, (3, 6), generator=torch.Generator().manual_seed(2))
    targets, scored = memory.roll(1, dims=1), torch.ones_like(memory, dtype=torch.bool)
    weight = model.controller.readout.weight

    def loss():
        return rollout_loss(model(memory, 3), targets, scored)

    loss().backward()
    analytic = weight.grad.clone()
    step = 1e-6
    for index in [(0, 0), (5, 1), (17, 3), (weight.shape[0] - 1, 2)]:
        with torch.no_grad():
            weight[index] += step
            above = loss().item()
            weight[index] -= 2 * step
            below = loss().item()
            weight[index] += step
        assert abs((above - below) / (2 * step) - analytic[index].item()) < 1e-6 * max(1.0, abs(analytic[index].item()))


def test_a_table_for_too_many_registers_is_refused_before_it_allocates():
    with pytest.raises(ValueError, match="at most 12 registers"):
        TableController(13, 5)
    assert TableController(12, 5).readout.weight.shape == (5, 4096)
