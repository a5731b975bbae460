"""Reading a controller off as a program: the inverse of distillation, scored like the discrete
machine, exported as plain Python that runs the same."""

import random

import pytest
import torch
from test_distil import distilled

from nram.discrete import run_discrete
from nram.model import NRAM, MachineConfig
from tasks import get_task
from training.cli import main
from training.config import TrainConfig
from training.evaluate import evaluate, evaluation_batches
from training.program_machine import decompile, evaluate_program, reached_patterns, run_table
from training.program_source import program_source, standalone_source
from training.programs import PROGRAMS, Program, live_choices
from training.rule_merging import cover
from training.trainer import Trainer


def patterns_of(condition, num_registers):
    """The patterns a condition {register: is zero} matches, by counting (independent of rule_merging)."""
    found = set()
    for pattern in range(2 ** num_registers):
        flags = [(pattern >> (num_registers - 1 - r)) & 1 == 1 for r in range(num_registers)]
        if all(flags[r] == zero for r, zero in condition.items()):
            found.add(pattern)
    return found


@pytest.mark.parametrize("seed", range(20))
def test_cover_takes_every_wanted_pattern_and_nothing_outside_the_allowed(seed):
    rng = random.Random(seed)
    num_registers = rng.randint(1, 5)
    everything = list(range(2 ** num_registers))
    allowed = set(rng.sample(everything, rng.randint(1, len(everything))))
    wanted = set(rng.sample(sorted(allowed), rng.randint(0, len(allowed))))
    covered = set().union(*(patterns_of(c, num_registers) for c in cover(wanted, allowed, num_registers)))
    assert wanted <= covered <= allowed


def test_cover_merges_a_whole_half_into_one_condition():
    assert cover({4, 5, 6, 7}, {4, 5, 6, 7}, 3) == [{0: True}]
    assert cover({1}, set(range(8)), 3) == [{}]


@pytest.mark.parametrize("task_name", sorted(PROGRAMS))
def test_reading_off_a_distilled_hand_program_gives_it_back(task_name):
    """Every reached pattern chooses as the hand program does (up to the inputs of gates whose
    output nothing uses), and nothing stops early."""
    config, model = distilled(task_name)
    hand = PROGRAMS[task_name]
    lengths = [*range(config.min_length, config.max_length + 1), 4 * config.max_length]
    first_seen = reached_patterns(hand, model.layout, get_task(task_name), lengths,
                                  memory_size_for=config.memory_size_for, timesteps_for=config.timesteps_for)
    reached = first_seen >= 0
    assert 1 <= int(reached.sum()) < len(first_seen)  # some patterns never occur: the test sees both kinds
    read_off = Program.from_controller(model, first_seen, registers=hand.registers)
    want = live_choices(hand.choice_table(model.layout), model.layout)
    assert torch.equal(read_off.choice_table(model.layout)[reached], want[reached])
    assert not read_off.stop_table()[reached].any()
    assert len(read_off.rules) <= 2 * len(hand.rules)
    for length in lengths:  # and it runs as the hand program: same final memories
        for batch in evaluation_batches(get_task(task_name), length, config.memory_size_for(length), 100, seed=7):
            steps = config.timesteps_for(length)
            assert torch.equal(run_table(read_off.choice_table(model.layout), read_off.stop_table(), model.layout,
                                         batch.memory, steps),
                               run_table(hand.choice_table(model.layout), hand.stop_table(), model.layout,
                                         batch.memory, steps))


@pytest.fixture(scope="module")
def short_copy_run(tmp_path_factory):
    """A Copy checkpoint after a few steps: whatever it learned, its program must score as it does."""
    out = tmp_path_factory.mktemp("copy")
    config = TrainConfig(task="copy", min_length=2, max_length=4, timesteps=2, timesteps_per_length=1.0,
                         num_registers=3, hidden_size=16, batch_size=16, steps=40, eval_every=40, log_every=20,
                         eval_examples=20, checkpoint_every=40)
    trainer = Trainer(config, out, progress=False)
    trainer.train()
    return trainer.model, config, out / "checkpoint.pt"


def test_the_program_scores_as_eval_discrete_at_1x_4x_and_100x(short_copy_run):
    model, config, _ = short_copy_run
    program, _ = decompile(model, config)
    lengths = [config.max_length, 4 * config.max_length, 100 * config.max_length]
    settings = dict(memory_size_for=config.memory_size_for, timesteps_for=config.timesteps_for, examples=100)
    discrete = evaluate(model, get_task("copy"), lengths, discrete=True, **settings)
    from_program = evaluate_program(program, model.layout, get_task("copy"), lengths, **settings)
    for machine, read_off in zip(discrete, from_program):
        assert read_off.pop("mode") == "program"
        machine.pop("mode")
        assert read_off == machine


def test_the_exported_function_runs_as_the_program_and_the_machine(short_copy_run, tmp_path):
    model, config, _ = short_copy_run
    model.eval()
    program, _ = decompile(model, config)
    namespace = {}
    exec(standalone_source(program, model.layout, "Copy, a short run."), namespace)
    table, stops = program.choice_table(model.layout), program.stop_table()
    checked = 0
    for length in (1, 3, 4, 9, 17):
        for batch in evaluation_batches(get_task("copy"), length, config.memory_size_for(length), 200, seed=length):
            steps = config.timesteps_for(length)
            by_program = run_table(table, stops, model.layout, batch.memory, steps)
            by_machine = run_discrete(model, batch.memory, steps)
            assert torch.equal(by_program, by_machine)
            for memory0, final in zip(batch.memory.tolist(), by_program.tolist()):
                assert namespace["run"](memory0, steps) == final
                checked += 1
    assert checked == 1000


def decisive_model(seed, num_registers=3):
    """A random MLP controller with logits so large that every choice, the stop included, is sharp."""
    torch.manual_seed(seed)
    model = NRAM(MachineConfig(num_registers=num_registers, gates=("read", "zero", "one", "inc", "add", "lt",
                                                                    "write")))
    with torch.no_grad():
        model.controller.readout.weight.mul_(1e4)
        model.controller.readout.bias.mul_(1e4)
    return model


def test_controllers_that_stop_read_off_with_their_stops():
    """Random sharp controllers, stopping early on some patterns: the program, its export and the
    discrete machine end every example with the same memory."""
    stopped_somewhere = 0
    for seed in range(6):
        model = decisive_model(seed).eval()
        program = Program.from_controller(model)
        stopped_somewhere += bool(program.stops)
        namespace = {}
        exec(standalone_source(program, model.layout, "random"), namespace)
        memory0 = torch.randint(0, 9, (64, 9), generator=torch.Generator().manual_seed(seed))
        by_machine = run_discrete(model, memory0, 12)
        by_program = run_table(program.choice_table(model.layout), program.stop_table(), model.layout, memory0, 12)
        assert torch.equal(by_machine, by_program)
        for start, final in zip(memory0.tolist(), by_machine.tolist()):
            assert namespace["run"](start, 12) == final
    assert stopped_somewhere >= 2


def test_the_source_form_is_a_program_that_builds_the_same_table(short_copy_run):
    model, config, _ = short_copy_run
    program, _ = decompile(model, config)
    namespace = {"Program": Program}
    exec(program_source(program, "READ_OFF"), namespace)
    rebuilt = namespace["READ_OFF"]
    assert torch.equal(rebuilt.choice_table(model.layout), program.choice_table(model.layout))
    assert rebuilt.unreached == program.unreached


def test_nram_program_prints_writes_and_verifies(short_copy_run, tmp_path, capsys):
    _, config, checkpoint = short_copy_run
    exported = tmp_path / "copy_program.py"
    assert main(["program", "--checkpoint", str(checkpoint), "--python", str(exported), "--verify",
                 "--lengths", "4,40", "--examples", "50"]) == 0
    out = capsys.readouterr().out
    assert "LEARNED = Program((" in out and "program" in out.splitlines()[-1]
    assert "def run(memory: list[int], steps: int) -> list[int]:" in exported.read_text()
    assert "import" not in exported.read_text()


def test_nram_program_refuses_an_lstm_with_a_reason(tmp_path, capsys):
    config = TrainConfig(task="access", controller="lstm", hidden_size=8, batch_size=4, steps=1, eval_every=1,
                         eval_examples=4, checkpoint_every=1)
    Trainer(config, tmp_path, progress=False).train()
    assert main(["program", "--checkpoint", str(tmp_path / "checkpoint.pt")]) == 2
    assert "carries state from step to step" in capsys.readouterr().err


def test_nram_program_refuses_bad_lengths_before_any_work(short_copy_run, capsys):
    _, _, checkpoint = short_copy_run
    assert main(["program", "--checkpoint", str(checkpoint), "--verify", "--lengths", "0"]) == 2
    captured = capsys.readouterr()
    assert "--lengths needs values >= 1" in captured.err and captured.out == ""
