"""NativeAdam (its update in one C call) against torch.optim.Adam, the reference it must equal."""

import copy

import pytest
import torch

from nram import native
from nram.native_training import AdamUpdate
from training.optim import NativeAdam

pytestmark = pytest.mark.skipif(native.library("double") is None, reason="no C compiler")

SHAPES = [(5, 3), (5,), (7, 5), (1,)]


def parameters(dtype: torch.dtype, seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)) for shape in SHAPES]


def gradients(steps: int, dtype: torch.dtype, seed: int = 1) -> list[list[torch.Tensor]]:
    """One gradient per parameter for each of ``steps`` steps, the same for every optimizer."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=generator, dtype=dtype) for shape in SHAPES] for _ in range(steps)]


def run(optimizer: torch.optim.Optimizer, params, steps_gradients) -> torch.optim.Optimizer:
    for step_gradients in steps_gradients:
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, step_gradients):
            p.grad = g.clone()
        optimizer.step()
    return optimizer


def train(optimizer_class, params, steps: int, **options) -> torch.optim.Optimizer:
    return run(optimizer_class(params, **options), params, gradients(steps, params[0].dtype))


def assert_same_run(native_params, torch_params, native_optimizer, torch_optimizer, tolerance: float) -> None:
    for mine, theirs in zip(native_params, torch_params):
        torch.testing.assert_close(mine, theirs, rtol=tolerance, atol=tolerance)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(native_optimizer.state[mine][key], torch_optimizer.state[theirs][key],
                                       rtol=tolerance, atol=tolerance, check_dtype=key != "step", msg=key)


@pytest.mark.parametrize("options", [
    {"lr": 0.01}, {"lr": 0.003, "weight_decay": 0.1}, {"lr": 0.01, "maximize": True},
    {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-4}])
def test_float64_steps_equal_torch_adam(options):
    ours, theirs = parameters(torch.float64), parameters(torch.float64)
    mine = train(NativeAdam, ours, 12, **options)
    reference = train(torch.optim.Adam, theirs, 12, foreach=False, **options)
    assert mine._plans is not None, "the steps did not run in C"
    assert_same_run(ours, theirs, mine, reference, 1e-12)
    assert all(float(mine.state[p]["step"]) == 12 for p in ours)


def test_float32_steps_agree_with_torch_fused_adam_to_rounding():
    ours, theirs = parameters(torch.float32), parameters(torch.float32)
    mine = train(NativeAdam, ours, 20, lr=0.01, fused=True)
    reference = train(torch.optim.Adam, theirs, 20, lr=0.01, fused=True)
    assert mine._plans is not None
    assert_same_run(ours, theirs, mine, reference, 1e-5)


@pytest.mark.parametrize("case", ["amsgrad", "no gradient", "pytorch step"])
def test_what_the_c_update_lacks_takes_torchs_step(monkeypatch, case):
    """Bit for bit torch's own results: amsgrad, a parameter without gradient (skipped, no state),
    or NRAM_NATIVE=0."""
    options = {"lr": 0.01, "amsgrad": case == "amsgrad"}
    if case == "pytorch step":
        monkeypatch.setenv("NRAM_NATIVE", "0")
    ours, theirs = parameters(torch.float64), parameters(torch.float64)
    mine, reference = NativeAdam(ours, **options), torch.optim.Adam(theirs, **options)
    for optimizer, params in ((mine, ours), (reference, theirs)):
        for step_gradients in gradients(3, torch.float64):
            for p, g in zip(params, step_gradients):
                p.grad = None if case == "no gradient" and p is params[1] else g.clone()
            optimizer.step()
    assert mine._plans is None
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    if case == "no gradient":
        assert not mine.state[ours[1]]


@pytest.mark.parametrize("first, second", [(NativeAdam, torch.optim.Adam), (torch.optim.Adam, NativeAdam)])
def test_state_dicts_move_between_native_and_torch_adam_and_resume_the_same_run(first, second):
    steps_gradients = gradients(6, torch.float64)
    straight = parameters(torch.float64)
    reference = run(torch.optim.Adam(straight, lr=0.01, foreach=False), straight, steps_gradients)
    params = parameters(torch.float64)
    before = run(first(params, lr=0.01), params, steps_gradients[:3])
    after = second(params, lr=0.01)
    after.load_state_dict(before.state_dict())
    run(after, params, steps_gradients[3:])
    assert_same_run(params, straight, after, reference, 1e-12)


def test_loading_a_state_dict_replaces_the_moments_the_c_update_reads():
    """Load the state of step 2 after step 3 and take step 3 again: the same parameters."""
    steps_gradients = gradients(3, torch.float64)
    params = parameters(torch.float64)
    optimizer = run(NativeAdam(params, lr=0.01), params, steps_gradients[:2])
    saved = copy.deepcopy(optimizer.state_dict())
    saved_params = [p.detach().clone() for p in params]
    run(optimizer, params, steps_gradients[2:])
    once = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, value in zip(params, saved_params):
            p.copy_(value)
    optimizer.load_state_dict(saved)
    run(optimizer, params, steps_gradients[2:])
    for p, expected in zip(params, once):
        assert torch.equal(p.detach(), expected)


def test_the_update_refuses_tensors_it_cannot_read():
    params = [torch.zeros(4, 3, dtype=torch.float64)]
    moments = [torch.zeros(4, 3, dtype=torch.float64)]
    with pytest.raises(ValueError, match="contiguous"):
        AdamUpdate([torch.zeros(3, 4, dtype=torch.float64).t()], moments, moments)
    with pytest.raises(ValueError, match="shape"):
        AdamUpdate(params, [torch.zeros(12, dtype=torch.float64)], moments)
    with pytest.raises(ValueError, match="float32 and float64"):
        AdamUpdate([torch.zeros(2, dtype=torch.float16)], [torch.zeros(2, dtype=torch.float16)],
                   [torch.zeros(2, dtype=torch.float16)])
    update = AdamUpdate(params, moments, [torch.zeros(4, 3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="gradient"):
        update([torch.zeros(4, 3, dtype=torch.float32)], [1.0], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.0, maximize=False)
    assert not params[0].any()
