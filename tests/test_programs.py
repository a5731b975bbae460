"""Every shipped circuit can solve its task: the hand-written programs of
:mod:`training.programs`, run on the integer machine at the training lengths and at four times
the longest, leave every scored cell right. A config that no program can solve (too few steps,
a missing gate) fails here before anyone spends hours training it.
"""

from __future__ import annotations

import pytest
import torch

from nram.circuit import CircuitLayout
from training.config import default_config_path, load_config
from training.programs import LISTK, PERMUTATION, PROGRAMS, Program, pattern_index, run_program, zero_patterns


@pytest.mark.parametrize("task_name", sorted(PROGRAMS))
def test_the_shipped_circuit_runs_an_exact_program(task_name):
    config = load_config(default_config_path(task_name))
    for length in sorted({*range(config.min_length, config.max_length + 1), 4 * config.max_length}):
        assert run_program(task_name, PROGRAMS[task_name], length) == 0.0, f"length {length}"


def test_a_program_one_step_short_fails():
    """The check can fail: Permutation needs 1 + 2n steps; with 2n the last cell stays wrong."""
    assert run_program("permutation", PERMUTATION, 3, steps=1 + 2 * 3) == 0.0
    assert run_program("permutation", PERMUTATION, 3, steps=2 * 3) > 0.0


def test_listk_without_its_hop_rule_never_hops():
    """One rule away: without rule 2 (hop while k > 0) the program always answers node 0; at
    length 1 (k = 0 always) it stays exact, at length 2 it is wrong on about the half with k = 1."""
    damaged = LISTK.without_rule(2)
    assert list(damaged.rules) == [LISTK.rules[0], LISTK.rules[1], LISTK.rules[3]]
    assert len(LISTK.rules) == 4
    assert run_program("listk", damaged, 1) == 0.0
    assert 0.35 < run_program("listk", damaged, 2) < 0.65
    for index in (4, -1):
        with pytest.raises(ValueError, match=f"rules 0..3, not {index}"):
            LISTK.without_rule(index)


def test_each_pattern_of_zero_flags_has_its_own_table_row():
    patterns = zero_patterns(3)
    assert patterns.tolist()[1] == [0.0, 0.0, 1.0]
    assert pattern_index(patterns.bool()).tolist() == list(range(8))


def test_the_first_matching_rule_picks_and_unnamed_registers_keep_their_value():
    layout = CircuitLayout(2, ("read", "inc", "write"))
    program = Program(("a", "b"), [({"a": True}, {"a": "inc", "inc": "b"}), ({}, {"b": "read"})])
    table = program.choice_table(layout)
    a_slot, b_slot, inc_slot = layout.num_slots - 2, layout.num_slots - 1, layout.first_slot[1]
    a_zero = pattern_index(torch.tensor([[True, False]]))
    neither = pattern_index(torch.tensor([[False, False]]))
    assert table[a_zero, a_slot].item() == 2 + 1 and table[a_zero, b_slot].item() == 1  # a := inc; b keeps
    assert table[a_zero, inc_slot].item() == 1  # inc reads b
    assert table[neither, a_slot].item() == 0 and table[neither, b_slot].item() == 2  # a keeps; b := read
    assert table[neither, inc_slot].item() == 0  # inc not named: reads the first register


@pytest.mark.parametrize("program, message", [
    (Program(("a",), []), "names 1 registers"),
    (Program(("a", "b"), [({}, {"add": ("a", "b")})]), "lacks"),
    (Program(("a", "b"), [({}, {"inc": ("a", "b")})]), "takes 1 inputs"),
    (Program(("a", "b"), [({}, {"read": "inc"})]), "comes later"),
    (Program(("a", "b"), [({}, {"a": "c"})]), "neither a register nor a gate"),
    (Program(("a", "b"), [({"c": True}, {})]), "not a register"),
])
def test_a_program_that_does_not_fit_the_circuit_is_refused(program, message):
    with pytest.raises(ValueError, match=message):
        program.choice_table(CircuitLayout(2, ("read", "inc", "write")))
