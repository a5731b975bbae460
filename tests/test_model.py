"""The unrolled model: stop distribution, loss, memory-size independence, input validation."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_cuda

import nram.model as model_module
from nram.model import NRAM, MachineConfig, choice_entropy, rollout_loss, stop_at_horizons, stop_distribution


def test_stop_distribution_matches_its_definition():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = torch.sigmoid(logits)
    expected = []
    for t in range(5):
        survive = torch.prod(1 - f[:t], dim=0) if t else torch.ones(5, dtype=torch.float64)
        expected.append(f[t] * survive)
    expected.append(1 - sum(expected))
    got = stop_distribution(logits)
    assert torch.allclose(got, torch.stack(expected), rtol=0, atol=1e-12)
    assert torch.allclose(got.sum(0), torch.ones(5, dtype=torch.float64), atol=1e-12)


def test_loss_is_the_expected_masked_negative_log_likelihood():
    torch.manual_seed(0)
    model = NRAM(MachineConfig(num_registers=2)).double()
    gen = torch.Generator().manual_seed(1)
    memory0 = torch.randint(0, 6, (3, 6), generator=gen)
    target = torch.randint(0, 6, (3, 6), generator=gen)
    mask = torch.rand(3, 6, generator=gen) < 0.5
    rollout = model(memory0, 4)
    expected = 0.0
    for b in range(3):
        for t in range(4):
            for i in range(6):
                if mask[b, i]:
                    likelihood = max(rollout.memories[t, b, i, target[b, i]].item(), 1e-6)
                    expected -= rollout.stop_probs[t, b].item() * math.log(likelihood)
    assert rollout_loss(rollout, target, mask).item() == pytest.approx(expected / 3, abs=1e-10)


def test_output_memory_is_the_stop_weighted_mixture():
    torch.manual_seed(0)
    rollout = NRAM(MachineConfig(num_registers=2))(torch.randint(0, 5, (2, 5)), 3)
    expected = sum(rollout.stop_probs[t, :, None, None] * rollout.memories[t] for t in range(3))
    assert torch.allclose(rollout.output_memory(), expected, atol=1e-6)


def test_streamed_output_memory_equals_the_rollouts():
    torch.manual_seed(0)
    model = NRAM(MachineConfig(num_registers=2)).double()
    memory0 = torch.randint(0, 6, (4, 6))
    expected = model(memory0, 5).output_memory()
    assert torch.allclose(model.output_memory(memory0, 5), expected, rtol=0, atol=1e-12)


def test_streamed_output_memory_in_cpu_slices_equals_the_rollouts(monkeypatch):
    monkeypatch.setattr(model_module, "CPU_SLICE_BYTES", 3 * 6 * 6 * 8)  # slices of 3 examples
    torch.manual_seed(0)
    model = NRAM(MachineConfig(num_registers=2)).double().eval()
    slices = []
    streamed = model._streamed_output
    monkeypatch.setattr(model, "_streamed_output", lambda part, steps: slices.append(len(part)) or streamed(part, steps))
    memory0 = torch.randint(0, 6, (8, 6))
    expected = model(memory0, 5).output_memory()
    assert torch.allclose(model.output_memory(memory0, 5), expected, rtol=0, atol=1e-12)
    assert slices == [3, 3, 2]


def test_one_hot_and_integer_memory_give_the_same_rollout():
    torch.manual_seed(0)
    model = NRAM()
    memory0 = torch.randint(0, 7, (2, 7))
    a, b = model(memory0, 3), model(F.one_hot(memory0, 7).float(), 3)
    assert torch.equal(a.memories, b.memories)


@pytest.mark.parametrize("controller", ["mlp", "lstm"])
def test_weights_made_at_m8_load_and_run_at_m64(controller):
    torch.manual_seed(0)
    small = NRAM(MachineConfig(num_registers=3, controller=controller))
    small(torch.randint(0, 8, (4, 8)), 3)
    large = NRAM(MachineConfig(num_registers=3, controller=controller))
    large.controller.load_state_dict(small.controller.state_dict())
    memory0 = torch.randint(0, 64, (4, 64))
    rollout = large(memory0, 5)
    assert rollout.memories.shape == (5, 4, 64, 64)
    assert torch.equal(rollout.memories, small(memory0, 5).memories)


def test_entropy_is_reported_only_when_asked_and_has_a_finite_gradient():
    torch.manual_seed(0)
    model = NRAM(MachineConfig(num_registers=2)).double()
    memory0 = torch.randint(0, 5, (2, 5))
    assert model(memory0, 2).choice_entropy is None
    entropy = model(memory0, 2, with_entropy=True).choice_entropy
    assert entropy.shape == (2, 2)
    entropy.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_choice_entropy_matches_its_definition_over_the_real_options():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    logits[:, :, 4:] = float("-inf")
    weights = torch.softmax(logits[:, :, :4], -1)
    expected = -(weights * weights.log()).sum(-1).mean(-1)
    assert torch.allclose(choice_entropy(logits), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("memory0, steps, message", [
    (torch.tensor([[0, 5, 1]]), 2, r"values in 0..2 \(M = 3\)"),
    (torch.tensor([[0, -1, 1]]), 2, r"values in 0..2"),
    (torch.zeros(2, 3, 3, dtype=torch.long), 2, r"must be \[batch, M\]"),
    (torch.zeros(2, 3, 4), 2, r"must be \[batch, M, M\]"),
    (torch.zeros(2, 1, dtype=torch.long), 2, "M must be >= 2"),
    (torch.zeros(2, 4, dtype=torch.long), 0, "steps must be an integer >= 1"),
    (torch.zeros(0, 4, dtype=torch.long), 1, "empty batch"),
])
def test_bad_memory_or_steps_raise_clear_value_errors(memory0, steps, message):
    with pytest.raises(ValueError, match=message):
        NRAM()(memory0, steps)


@pytest.mark.parametrize("config, message", [
    (dict(gates=("read", "mul")), "unknown gate 'mul'"),
    (dict(gates=("write", "read")), "paper order"),
    (dict(num_registers=0), "num_registers must be >= 1"),
    (dict(controller="transformer"), "unknown controller 'transformer'"),
    (dict(hidden_size=0), "hidden_size must be >= 1"),
])
def test_bad_config_raises_clear_value_error(config, message):
    with pytest.raises(ValueError, match=message):
        NRAM(MachineConfig(**config))


@requires_cuda
def test_cuda_rollout_matches_cpu():
    torch.manual_seed(0)
    model = NRAM()
    memory0 = torch.randint(0, 12, (8, 12))
    cpu = model(memory0, 4)
    gpu = model.cuda()(memory0.cuda(), 4)
    assert torch.allclose(gpu.memories.cpu(), cpu.memories, atol=1e-4)
    assert torch.allclose(gpu.stop_probs.cpu(), cpu.stop_probs, atol=1e-5)


@pytest.mark.parametrize("gates", [None, ("read", "add", "lt", "write")])
def test_step_logits_put_every_controller_output_at_its_slot_and_option(gates):
    # Read the controller's flat output off the padded choices, knowing only the documented
    # layout: slot after slot, each as wide as its options, then the stop logit.
    config = MachineConfig(num_registers=3, gates=gates) if gates else MachineConfig(num_registers=3)
    model = NRAM(config)
    layout = model.layout
    with torch.no_grad():
        model.controller.readout.weight.zero_()
        model.controller.readout.bias.copy_(torch.arange(layout.num_logits, dtype=torch.float32))
    choices, stop_logit, _ = model.step_logits(torch.ones(2, 3), None, model.readout())
    assert choices.shape == (2, layout.num_slots, layout.num_sources)
    offset = 0
    for slot, width in enumerate(layout.slot_widths):
        assert choices[:, slot, :width].tolist() == [list(range(offset, offset + width))] * 2
        assert torch.isneginf(choices[:, slot, width:]).all()
        offset += width
    assert stop_logit.tolist() == [layout.num_logits - 1] * 2


def test_mlp_features_are_its_layers_applied_in_order():
    torch.manual_seed(0)
    controller = NRAM(MachineConfig(num_registers=3, hidden_size=16)).controller
    inputs = torch.rand(5, 3)
    hidden, _ = controller.features(inputs)
    assert torch.equal(hidden, controller.body(inputs))
    assert torch.equal(controller.readout(hidden), controller(inputs)[0])


def test_stopping_at_horizons_gives_the_stop_distribution_of_the_shorter_runs():
    logits = 3 * torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    horizons = torch.tensor([1, 6, 3, 4, 2])
    stopped = stop_at_horizons(stop_distribution(logits), horizons)
    for b, h in enumerate(horizons.tolist()):
        torch.testing.assert_close(stopped[:h, b], stop_distribution(logits[:h, b:b + 1])[:, 0], rtol=0, atol=1e-12)
        assert torch.all(stopped[h:, b] == 0)
    probs = stop_distribution(logits)
    assert torch.equal(stop_at_horizons(probs, torch.full((5,), 6)), probs)  # stopping at T changes nothing


@pytest.mark.parametrize("horizons", [[0, 3], [3, 7], [3]])
def test_horizons_outside_the_run_are_refused(horizons):
    with pytest.raises(ValueError, match="horizons must"):
        stop_at_horizons(stop_distribution(torch.zeros(6, 2)), torch.tensor(horizons))
