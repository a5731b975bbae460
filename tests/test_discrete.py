"""The discrete machine: an independent interpreter, and agreement with one-hot soft runs."""

import pytest
import torch
import torch.nn.functional as F
from test_gates import INTEGER_FUNCTIONS

from nram.circuit import CircuitLayout
from nram.discrete import discrete_step, run_discrete, split_choices, trace_discrete
from nram.gates import GATE_ARITY
from nram.model import NRAM, MachineConfig


def interpret(memory, registers, gate_inputs, register_sources, gates):
    """One step for one example in plain Python integers."""
    memory, size = list(memory), len(memory)
    sources = list(registers)
    for i, name in enumerate(gates):
        a, b = (sources[gate_inputs[i][k]] for k in range(2)) if GATE_ARITY[name] == 2 else \
            (sources[gate_inputs[i][0]], None)
        if name == "read":
            out = memory[a]
        elif name == "write":
            memory[a] = b
            out = 0
        else:
            out = INTEGER_FUNCTIONS[name](a, b, size)
        sources.append(out)
    return memory, [sources[s] for s in register_sources]


@pytest.mark.parametrize("gates", [None, ("read", "add", "lt", "write"), ("zero", "dec", "min", "max")])
def test_discrete_step_matches_a_plain_interpreter(gates):
    layout = CircuitLayout(3, gates) if gates else CircuitLayout(3)
    gen = torch.Generator().manual_seed(0)
    batch, size = 64, 9
    memory = torch.randint(0, size, (batch, size), generator=gen)
    registers = torch.randint(0, size, (batch, 3), generator=gen)
    choices = torch.stack([torch.randint(0, w, (batch,), generator=gen) for w in layout.slot_widths], dim=1)
    gate_inputs, register_sources = split_choices(choices, layout)
    new_memory, new_registers, _ = discrete_step(memory, registers, gate_inputs, register_sources, layout.gates)
    for b in range(batch):
        want_memory, want_registers = interpret(memory[b].tolist(), registers[b].tolist(),
                                                gate_inputs[b].tolist(), register_sources[b].tolist(), layout.gates)
        assert new_memory[b].tolist() == want_memory
        assert new_registers[b].tolist() == want_registers


def test_a_stopped_example_keeps_its_memory_and_registers_and_in_place_writes_the_same():
    layout = CircuitLayout(3)
    gen = torch.Generator().manual_seed(1)
    batch, size = 64, 9
    memory = torch.randint(0, size, (batch, size), generator=gen)
    registers = torch.randint(0, size, (batch, 3), generator=gen)
    running = torch.rand(batch, generator=gen) < 0.5
    choices = torch.stack([torch.randint(0, w, (batch,), generator=gen) for w in layout.slot_widths], dim=1)
    gate_inputs, register_sources = split_choices(choices, layout)
    copied = discrete_step(memory, registers, gate_inputs, register_sources, layout.gates, running=running)
    into = memory.clone()
    in_place = discrete_step(into, registers, gate_inputs, register_sources, layout.gates, running=running,
                             in_place=True)
    assert in_place[0] is into
    for b in range(batch):
        want_memory, want_registers = interpret(memory[b].tolist(), registers[b].tolist(), gate_inputs[b].tolist(),
                                                register_sources[b].tolist(), layout.gates)
        if not running[b]:
            want_memory, want_registers = memory[b].tolist(), registers[b].tolist()
        for new_memory, new_registers, _ in (copied, in_place):
            assert new_memory[b].tolist() == want_memory
            assert new_registers[b].tolist() == want_registers


def decisive_model(seed, controller="mlp", gates=None, stop_logit=-50.0):
    """A random controller whose logits are so large that every softmax is one-hot."""
    torch.manual_seed(seed)
    config = MachineConfig(num_registers=3, controller=controller, **({"gates": gates} if gates else {}))
    model = NRAM(config)
    with torch.no_grad():
        readout = model.controller.readout
        readout.weight.mul_(1e6)
        readout.bias.mul_(1e6)
        readout.weight[-1].zero_()
        readout.bias[-1] = stop_logit
    return model


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("controller", ["mlp", "lstm"])
@pytest.mark.parametrize("gates", [None, ("read", "zero", "one", "inc", "add", "dec", "lt", "write")])
def test_one_hot_soft_machine_and_discrete_machine_agree(seed, controller, gates, step_backend):
    model = decisive_model(seed, controller, gates)
    memory0 = torch.randint(0, 10, (16, 10), generator=torch.Generator().manual_seed(seed))
    rollout = model(memory0, 6)
    trace = trace_discrete(model, memory0, 6)
    assert torch.equal(rollout.memories, F.one_hot(trace.memories[1:], 10).float())
    assert torch.equal(run_discrete(model, memory0, 6), trace.memories[-1])


def test_discrete_machine_stops_when_f_exceeds_one_half():
    model = decisive_model(0, stop_logit=50.0)
    memory0 = torch.randint(0, 8, (5, 8), generator=torch.Generator().manual_seed(0))
    trace = trace_discrete(model, memory0, 6)
    assert trace.stop_steps.tolist() == [1] * 5
    assert trace.memories.shape[0] == 2  # initial memory and the one after the single step
    rollout = model(memory0, 6)
    assert torch.allclose(rollout.stop_probs[0], torch.ones(5))
    assert torch.equal(rollout.output_memory(), F.one_hot(trace.memories[-1], 8).float())


def test_discrete_machine_rejects_distributions():
    with pytest.raises(ValueError, match="integer cells"):
        run_discrete(NRAM(), torch.full((1, 4, 4), 0.25), 2)


@pytest.mark.parametrize("stop_logit, expected", [(0.25, 1), (-0.25, 6)])
def test_stop_threshold_is_f_one_half(stop_logit, expected):
    # f = sigmoid(0.25) = 0.56 stops after the first step; f = 0.44 never stops.
    model = decisive_model(1, stop_logit=stop_logit)
    memory0 = torch.randint(0, 8, (3, 8), generator=torch.Generator().manual_seed(1))
    assert trace_discrete(model, memory0, 6).stop_steps.tolist() == [expected] * 3


def test_run_discrete_streams_and_ends_where_the_trace_does(monkeypatch):
    torch.manual_seed(4)
    model = NRAM(MachineConfig(num_registers=3))
    with torch.no_grad():  # sharp choices: examples stop at different steps
        model.controller.readout.weight.mul_(50.0)
        model.controller.readout.bias.mul_(50.0)
    memory0 = torch.randint(0, 16, (64, 16))
    trace = trace_discrete(model, memory0, 40)
    assert len(set(trace.stop_steps.tolist())) > 1
    monkeypatch.setattr("nram.discrete.trace_discrete", lambda *a: pytest.fail("run_discrete keeps a trace"))
    assert torch.equal(run_discrete(model, memory0, 40), trace.memories[-1])


def test_run_discrete_on_int32_memory_says_what_it_needs():
    with pytest.raises(ValueError, match="LongTensor"):
        run_discrete(NRAM(MachineConfig()), torch.zeros(2, 8, dtype=torch.int32), 3)
