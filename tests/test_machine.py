"""One soft timestep against a naive reference (brute-force gates, explicit mixtures, autograd)."""

import itertools

import pytest
import torch
from conftest import random_distributions, requires_cuda
from test_gates import INTEGER_FUNCTIONS

from nram.circuit import CircuitLayout
from nram.gates import GATE_ARITY, RESCALED_GATES
from nram.machine import MachineState, constant_values, machine_step
from nram.model import NRAM, MachineConfig

GATE_SETS = [None, ("read", "inc", "add", "write"), ("zero", "sub", "dec", "lt", "le", "eq", "min", "max"),
             ("read", "one", "two", "write")]


def brute_force_table(name, size, dtype):
    """table[x, y, c] = [m(x, y) = c]: the [M, M, M] table the package must not need."""
    table = torch.zeros(size, size, size, dtype=dtype)
    for x, y in itertools.product(range(size), range(size)):
        table[x, y, INTEGER_FUNCTIONS[name](x, y, size)] = 1.0
    return table


def reference_step(memory, registers, weights, layout):
    """The paper's timestep written out plainly: stack the sources, mix, apply each gate. It does
    not rescale (nram.gates.RESCALED_GATES): on the simplex, where the tests compare, that changes
    only rounding."""
    size = memory.shape[-1]
    sources = [registers[:, r] for r in range(layout.num_registers)]
    slot = 0
    for i, name in enumerate(layout.gates):
        stacked = torch.stack(sources, dim=1)
        inputs = [torch.einsum("bs,bsm->bm", weights[:, slot + k, : len(sources)], stacked)
                  for k in range(GATE_ARITY[name])]
        slot += GATE_ARITY[name]
        if name == "read":
            out = torch.einsum("bi,bij->bj", inputs[0], memory)
        elif name == "write":
            p, a = inputs
            memory = (1 - p)[:, :, None] * memory + p[:, :, None] * a[:, None, :]
            out = torch.zeros_like(p)
            out[:, 0] = 1.0
        else:
            uniform = torch.full_like(registers[:, 0], 1.0 / size)  # stands in for an unused input
            a = inputs[0] if inputs else uniform
            b = inputs[1] if len(inputs) > 1 else uniform
            out = torch.einsum("bx,by,xyc->bc", a, b, brute_force_table(name, size, memory.dtype))
        sources.append(out)
    stacked = torch.stack(sources, dim=1)
    new_registers = torch.einsum("brs,bsm->brm", weights[:, slot:], stacked)
    return memory, new_registers


def random_step_inputs(layout, batch, size, gen, dtype=torch.float64):
    memory = random_distributions(batch, size, size, generator=gen, dtype=dtype)
    registers = random_distributions(batch, layout.num_registers, size, generator=gen, dtype=dtype)
    logits = torch.randn(batch, layout.num_logits, generator=gen, dtype=dtype)
    return memory, registers, logits


def weights_from_logits(logits, layout):
    blank = torch.full_like(logits[:, :1], float("-inf"))
    padded = torch.cat([logits, blank], dim=1)[:, layout.padding_index()][:, :-1]  # source-major
    return torch.softmax(padded.view(-1, layout.num_sources, layout.num_slots).transpose(1, 2), dim=-1)


@pytest.mark.parametrize("gates", GATE_SETS)
@pytest.mark.parametrize("size", [3, 7, 33])  # 33: the batched-matmul path for large M
def test_step_and_its_gradient_match_the_reference(gates, size, step_backend):
    # The closed forms use sum(p) = 1, so off the simplex their gradients may differ from the
    # table's by a component normal to it. Memory and registers enter through softmaxes here,
    # so only the gradient along the simplex (the one training sees) is compared.
    layout = CircuitLayout(3, gates) if gates else CircuitLayout(3)
    gen = torch.Generator().manual_seed(size)
    memory_logits = torch.randn(4, size, size, generator=gen, dtype=torch.float64, requires_grad=True)
    register_logits = torch.randn(4, 3, size, generator=gen, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(4, layout.num_logits, generator=gen, dtype=torch.float64, requires_grad=True)
    grad_memory = torch.randn(4, size, size, generator=gen, dtype=torch.float64)
    grad_registers = torch.randn(4, 3, size, generator=gen, dtype=torch.float64)
    results = []
    for step in (lambda m, r, w: machine_step(MachineState(m, r), w, layout,
                                              constant_values(4, size, dtype=torch.float64)),
                 lambda m, r, w: reference_step(m, r, w, layout)):
        new_memory, new_registers = step(torch.softmax(memory_logits, -1), torch.softmax(register_logits, -1),
                                         weights_from_logits(logits, layout))
        objective = (new_memory * grad_memory).sum() + (new_registers * grad_registers).sum()
        gradients = torch.autograd.grad(objective, (memory_logits, register_logits, logits))
        results.append((new_memory, new_registers, *gradients))
    for got, want in zip(*results):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gates", GATE_SETS)
def test_gradcheck_one_full_timestep(gates, step_backend):
    layout = CircuitLayout(2, gates) if gates else CircuitLayout(2)
    gen = torch.Generator().manual_seed(11)
    memory, registers, logits = (x.requires_grad_() for x in random_step_inputs(layout, 2, 5, gen))
    constants = constant_values(2, 5, dtype=torch.float64)

    def step(m, r, z):
        return tuple(machine_step(MachineState(m, r), weights_from_logits(z, layout), layout, constants))

    assert torch.autograd.gradcheck(step, (memory, registers, logits))


@pytest.mark.parametrize("controller", ["mlp", "lstm"])
def test_memory_stays_a_distribution_for_fifty_steps_in_float32(controller, step_backend):
    torch.manual_seed(0)
    model = NRAM(MachineConfig(num_registers=4, controller=controller))
    memory0 = torch.randint(0, 16, (8, 16), generator=torch.Generator().manual_seed(0))
    rollout = model(memory0, 50)
    assert (rollout.memories >= 0).all()
    assert torch.allclose(rollout.memories.sum(-1), torch.ones(()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("gate", sorted(RESCALED_GATES))
def test_rescaled_gates_keep_a_drifting_total_from_compounding(gate, step_backend):
    """The register replaced by ``gate`` of itself at every step. From a total of 1.001 in the
    register and the memory rows, the total would grow as 1.001 ** (2 ** t) for ADD, SUB, MIN,
    MAX (overflowing by step 20) and as 1.001 ** (t + 1) for READ. Rescaled, it is 1 after one step."""
    layout = CircuitLayout(1, (gate,))
    weights = torch.zeros(2, layout.num_slots, layout.num_sources)
    weights[:, :GATE_ARITY[gate], 0] = 1.0  # the gate reads the register
    weights[:, -1, 1] = 1.0  # the register takes the gate's output
    generator = torch.Generator().manual_seed(0)
    memory = torch.softmax(torch.randn(2, 6, 6, generator=generator), -1) * 1.001
    registers = torch.softmax(torch.randn(2, 1, 6, generator=generator), -1) * 1.001
    state = MachineState(memory, registers)
    for _ in range(25):
        state = machine_step(state, weights, layout, constant_values(2, 6))
    assert torch.allclose(state.registers.sum(-1), torch.ones(()), rtol=0, atol=1e-6)


@requires_cuda
def test_cuda_step_matches_cpu():
    layout = CircuitLayout(3)
    gen = torch.Generator().manual_seed(2)
    memory, registers, logits = random_step_inputs(layout, 4, 9, gen, dtype=torch.float32)
    weights = weights_from_logits(logits, layout)
    cpu = machine_step(MachineState(memory, registers), weights, layout, constant_values(4, 9))
    gpu = machine_step(MachineState(memory.cuda(), registers.cuda()), weights.cuda(), layout,
                       constant_values(4, 9, device="cuda"))
    for want, got in zip(cpu, gpu):
        assert torch.allclose(got.cpu(), want, atol=1e-5)
