"""Distilled programs: the controller picks the program's choice in every slot, and the machine
it drives solves the task like the program does, discrete and soft."""

import pytest
import torch

from nram.model import NRAM
from tasks import get_task
from training.config import default_config_path, load_config
from training.distil import distil_program, slot_margins
from training.evaluate import evaluate
from training.programs import PROGRAMS, zero_patterns


def distilled(task_name, margin=8.0, **overrides):
    config = load_config(default_config_path(task_name), **{"controller": "mlp", **overrides})  # programs go into MLPs
    torch.manual_seed(0)
    model = NRAM(config.machine_config())
    distil_program(model, PROGRAMS[task_name], margin=margin)
    return config, model


def errors(config, model, lengths, discrete):
    records = evaluate(model, get_task(config.task), lengths, memory_size_for=config.memory_size_for,
                       timesteps_for=config.timesteps_for, examples=200, discrete=discrete)
    return [record["cell_error"] for record in records]


@pytest.mark.parametrize("task_name", sorted(PROGRAMS))
def test_a_distilled_program_solves_its_task_at_four_times_the_training_lengths(task_name):
    config, model = distilled(task_name)
    lengths = [*range(config.min_length, config.max_length + 1), 4 * config.max_length]
    assert errors(config, model, lengths, discrete=True) == [0.0] * len(lengths)
    if task_name in ("listk", "permutation"):
        assert errors(config, model, lengths, discrete=False) == [0.0] * len(lengths)


def test_the_controller_picks_the_program_choice_on_every_pattern():
    config, model = distilled("walkbst")
    table = PROGRAMS["walkbst"].choice_table(model.layout)
    with torch.no_grad():
        logits, _ = model.controller(zero_patterns(config.num_registers))
    options = torch.split(logits[:, :-1], model.layout.slot_widths, dim=1)
    assert torch.equal(torch.stack([choice.argmax(dim=1) for choice in options], dim=1), table)


def test_every_slot_leads_by_the_margin_and_the_machine_never_stops():
    config, model = distilled("listk", margin=5.0)
    table = PROGRAMS["listk"].choice_table(model.layout)
    with torch.no_grad():
        logits, _ = model.controller(zero_patterns(config.num_registers))
    margins = slot_margins(logits, table, model.layout.slot_widths)
    assert margins.min().item() == pytest.approx(5.0, rel=1e-5)
    assert torch.all(logits[:, -1] == -5.0)


def test_a_soft_machine_needs_the_margin():
    """At margin 1 the soft machine fails, though its argmax is the same program."""
    config, model = distilled("listk", margin=1.0)
    assert errors(config, model, [3], discrete=True) == [0.0]
    assert errors(config, model, [3], discrete=False)[0] > 0.5


def test_another_controller_or_a_margin_that_is_not_positive_is_refused():
    config = load_config(default_config_path("listk"), controller="lstm")
    with pytest.raises(ValueError, match="plain MLP or the table controller"):
        distil_program(NRAM(config.machine_config()), PROGRAMS["listk"])
    config = load_config(default_config_path("listk"), controller="mlp")
    with pytest.raises(ValueError, match="margin must be > 0"):
        distil_program(NRAM(config.machine_config()), PROGRAMS["listk"], margin=0.0)
