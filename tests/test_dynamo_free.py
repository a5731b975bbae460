"""DynamoFreeSGD against torch.optim.SGD, the reference it must equal, and runs that never import torch._dynamo."""

import copy
import os
import subprocess
import sys

import pytest
import torch

from nram import native
from training.config import TrainConfig
from training.optim import DynamoFreeSGD, NativeAdam
from training.trainer import Trainer

needs_c = pytest.mark.skipif(native.library("double") is None, reason="no C compiler: no one-call rollout")
SHAPES = [(5, 3), (5,), (7, 5), (1,)]
OPTIONS = [dict(lr=0.1), dict(lr=0.1, momentum=0.9, weight_decay=0.03), dict(lr=0.1, momentum=0.9, nesterov=True),
           dict(lr=0.05, momentum=0.5, dampening=0.1, maximize=True), dict(lr=0.1, momentum=0.9, fused=True),
           dict(lr=0.1, momentum=0.9, foreach=False)]


def trajectory(optimizer_class: type, options: dict, steps: int = 5) -> tuple[list[torch.Tensor], dict]:
    """Parameters after ``steps`` steps on fixed gradients, and the optimizer's state dict."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in SHAPES]
    optimizer = optimizer_class(params, **options)
    for _ in range(steps):
        optimizer.zero_grad()
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    return [p.detach() for p in params], optimizer.state_dict()


@pytest.mark.parametrize("options", OPTIONS)
def test_dynamo_free_sgd_steps_exactly_as_torchs_sgd(options):
    ours, our_state = trajectory(DynamoFreeSGD, options)
    reference, reference_state = trajectory(torch.optim.SGD, options)
    for a, b in zip(ours, reference):
        assert torch.equal(a, b)
    assert our_state["param_groups"] == reference_state["param_groups"]
    for index, state in reference_state["state"].items():
        assert torch.equal(our_state["state"][index]["momentum_buffer"], state["momentum_buffer"])


def test_dynamo_free_sgd_takes_torchs_state_dict_and_continues_as_torchs_would():
    options = dict(lr=0.1, momentum=0.9)
    params, state = trajectory(torch.optim.SGD, options, steps=3)
    continued = [torch.nn.Parameter(p.clone()) for p in params]
    ours = DynamoFreeSGD(continued, **options)
    ours.load_state_dict(copy.deepcopy(state))  # loading keeps the tensors, which a step updates in place
    reference_params = [torch.nn.Parameter(p.clone()) for p in params]
    reference = torch.optim.SGD(reference_params, **options)
    reference.load_state_dict(copy.deepcopy(state))
    for optimizer, group in ((ours, continued), (reference, reference_params)):
        for p in group:
            p.grad = torch.ones_like(p)
        optimizer.step()
    for a, b in zip(continued, reference_params):
        assert torch.equal(a, b)


def test_a_closure_is_passed_on_and_its_loss_returned():
    param = torch.nn.Parameter(torch.tensor([2.0]))
    optimizer = DynamoFreeSGD([param], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (param ** 2).sum()
        loss.backward()
        return loss

    assert float(optimizer.step(closure).detach()) == 4.0
    assert torch.allclose(param.detach(), torch.tensor([2.0 - 0.1 * 4.0]))


@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.enable_grad])
def test_a_step_leaves_the_callers_grad_mode_as_it_was(grad_mode):
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.ones(3)
    optimizer = DynamoFreeSGD([param], lr=0.1, foreach=False)
    with grad_mode():
        expected = torch.is_grad_enabled()
        optimizer.step()
        assert torch.is_grad_enabled() == expected


@pytest.mark.parametrize("optimizer_class, options", [(DynamoFreeSGD, {}), (NativeAdam, {"amsgrad": True})])
def test_step_hooks_run_once_per_step_after_torchs_own_classes_were_built(optimizer_class, options):
    """Torch patches each optimizer class's step with its hooks on first use; the unwrapped
    step must not run them twice (NativeAdam with amsgrad takes torch's step)."""
    torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = optimizer_class([param], lr=0.1, **options)
    calls = []
    optimizer.register_step_pre_hook(lambda *_: calls.append(1))
    for _ in range(3):
        param.grad = torch.ones(3)
        optimizer.step()
    assert len(calls) == 3


@needs_c
@pytest.mark.parametrize("controller, optimizer, expected", [
    ("mlp", "adam", NativeAdam), ("lstm", "adam", torch.optim.Adam),
    ("mlp", "sgd", DynamoFreeSGD), ("lstm", "sgd", torch.optim.SGD)])
def test_the_one_call_rollout_steps_with_the_dynamo_free_optimizers_and_the_rest_with_torchs(
        tmp_path, controller, optimizer, expected):
    config = TrainConfig(task="access", controller=controller, optimizer=optimizer, hidden_size=8, batch_size=4)
    assert type(Trainer(config, tmp_path, progress=False).optimizer) is expected


@needs_c
@pytest.mark.parametrize("optimizer, entropy_bonus", [("adam", 0.0), ("sgd", 0.0), ("sgd", 0.05)])
def test_a_one_call_mlp_run_never_imports_torch_dynamo(tmp_path, optimizer, entropy_bonus):
    """torch's optimizer methods import torch._dynamo (about 2 s) on their first call; the one-call
    path's optimizers must not, through a whole run: construction, steps, zero_grad, a checkpoint
    and its resume, with rollouts in one C call or (with an entropy bonus, as Swap ships) through
    autograd."""
    script = f"""
import sys
from training.config import TrainConfig
from training.trainer import Trainer
config = TrainConfig(task="access", optimizer={optimizer!r}, entropy_bonus={entropy_bonus!r}, momentum=0.9,
                     hidden_size=8, batch_size=4, min_length=2, max_length=3, steps=4, eval_every=2, eval_examples=8,
                     checkpoint_every=2)
Trainer(config, {str(tmp_path)!r}, progress=False).train()
Trainer(TrainConfig(**{{**config.to_dict(), "steps": 6}}), {str(tmp_path)!r}, resume=True, progress=False).train()
assert "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
"""
    environment = {name: value for name, value in os.environ.items() if name != "NRAM_NATIVE"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
