"""Random-bases descent: against dense projections, statistics, compartments, resume, schedulers, args."""

import copy
import io
import math

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from conftest import requires_cuda
from training.optim import (DISTRIBUTIONS, OPTIMIZER_NAMES, FixedProjectionDescent, NativeAdam, RandomBasesDescent,
                            chunk_grid, directions, make_optimizer, module_compartments)

D = 39  # parameters of _model(): Linear(5, 4) has 24, Linear(4, 3) has 15


def _model(seed: int = 0, dtype=torch.float64, device="cpu") -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype=dtype, device=device)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _backward(model: nn.Module, seed: int) -> torch.Tensor:
    """Fresh gradients from a random batch; returns the flat gradient ``[D]``."""
    model.zero_grad()
    p0 = next(model.parameters())
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(seed), dtype=p0.dtype).to(p0.device)
    (model(x) ** 2).sum().backward()
    return _flat(p.grad for p in model.parameters())


def _dense(dims: int, n: int, chunk_size: int, *, seed: int, step: int, compartment: int, worker: int = 0,
           distribution: str = "normal", dtype=torch.float64, device="cpu") -> torch.Tensor:
    """The whole ``[dims, n]`` direction matrix of a compartment, assembled chunk by chunk."""
    rows, cols = chunk_grid(dims, n, chunk_size)
    n_blocks = -(-n // cols)
    v = torch.empty(dims, n, dtype=dtype, device=device)
    for r0 in range(0, dims, rows):
        for b in range(n_blocks):
            r1, c0, c1 = min(r0 + rows, dims), b * cols, min((b + 1) * cols, n)
            v[r0:r1, c0:c1] = directions(r1 - r0, c1 - c0, seed=seed, step=step, compartment=compartment,
                                         chunk=(r0 // rows) * n_blocks + b, worker=worker,
                                         distribution=distribution, dtype=dtype, device=device)
    return v


def _expected(theta, g, ranges, lr, dims, chunk_size, *, seed, step, distribution="normal", worker=0):
    """theta - lr / D * blockdiag(V_c^T V_c) g, compartments given as flat ranges."""
    out = theta.clone()
    for ci, (a, b) in enumerate(ranges):
        v = _dense(dims, b - a, chunk_size, seed=seed, step=step, compartment=ci, worker=worker,
                   distribution=distribution, dtype=theta.dtype, device=theta.device)
        out[a:b] -= lr / D * (v.T @ (v @ g[a:b]))
    return out


COMPARTMENTS = [("global", [(0, 39)]), ("module", [(0, 24), (24, 39)]),
                (3, [(0, 13), (13, 26), (26, 39)]), (5, [(0, 8), (8, 16), (16, 24), (24, 32), (32, 39)])]


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("chunk_size", [7, 1 << 22])  # many chunks per row; whole matrix in one chunk
@pytest.mark.parametrize("compartments, ranges", COMPARTMENTS)
def test_update_is_blockwise_projection_on_dense_basis(compartments, ranges, chunk_size, distribution):
    model = _model()
    opt = RandomBasesDescent(model.named_parameters(), lr=0.3, dims=6, compartments=compartments,
                             distribution=distribution, seed=11, chunk_size=chunk_size)
    assert opt.num_params == D and [c.numel for c in opt.compartments] == [b - a for a, b in ranges]
    for step in range(2):
        theta, g = _flat(model.parameters()).detach().clone(), _backward(model, seed=step)
        opt.step()
        want = _expected(theta, g, ranges, 0.3, 6, chunk_size, seed=11, step=step, distribution=distribution)
        torch.testing.assert_close(_flat(model.parameters()), want, rtol=0, atol=1e-10)


def test_param_groups_use_their_own_lr_frozen_params_stay_missing_grads_count_zero():
    model = _model()
    groups = [{"params": list(model[0].parameters()), "lr": 0.1}, {"params": list(model[2].parameters()), "lr": 0.7}]
    opt = RandomBasesDescent(groups, dims=5, compartments="global", seed=2)
    theta, g = _flat(model.parameters()).detach().clone(), _backward(model, seed=0)
    model[0].bias.grad = None  # trainable: a zero gradient, but it moves
    model[2].bias.requires_grad_(False)  # frozen: a zero gradient, and it stays
    g[20:24], g[36:] = 0.0, 0.0
    opt.step()
    v = _dense(5, D, 1 << 22, seed=2, step=0, compartment=0)
    lr = torch.tensor([0.1] * 24 + [0.7] * 15, dtype=torch.float64)
    want = theta - lr / D * (v.T @ (v @ g))
    want[36:] = theta[36:]
    torch.testing.assert_close(_flat(model.parameters()), want, rtol=0, atol=1e-10)


def _updates_with_constant_gradient(cls, steps: int = 3) -> list[torch.Tensor]:
    model = _model()
    opt = cls(model.named_parameters(), lr=0.5, dims=4, compartments="global", seed=0)
    g = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype)
         for i, p in enumerate(model.parameters())]
    out = []
    for _ in range(steps):
        before = _flat(model.parameters()).detach().clone()
        for p, gi in zip(model.parameters(), g):
            p.grad = gi.clone()
        opt.step()
        out.append(_flat(model.parameters()).detach() - before)
    return out


def test_rbd_redraws_directions_every_step():
    u = _updates_with_constant_gradient(RandomBasesDescent)
    assert not torch.allclose(u[0], u[1], atol=1e-3) and not torch.allclose(u[1], u[2], atol=1e-3)


def test_fpd_keeps_its_basis():
    u = _updates_with_constant_gradient(FixedProjectionDescent)
    torch.testing.assert_close(u[1], u[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(u[2], u[0], rtol=1e-12, atol=0)
    model = _model()  # and the basis is the step-0 one at every step
    opt = FixedProjectionDescent(model.named_parameters(), lr=0.2, dims=3, compartments="module", seed=4)
    for seed in range(3):
        theta, g = _flat(model.parameters()).detach().clone(), _backward(model, seed)
        opt.step()
        want = _expected(theta, g, [(0, 24), (24, 39)], 0.2, 3, 1 << 22, seed=4, step=0)
        torch.testing.assert_close(_flat(model.parameters()), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("compartments, coupled", [("module", False), ("global", True)])
def test_compartments_project_blockwise(compartments, coupled):
    """Changing the second module's gradient moves the first module only if they share directions."""
    def first_module_update(scale: float) -> torch.Tensor:
        model = _model()
        opt = RandomBasesDescent(model.named_parameters(), lr=1.0, dims=3, compartments=compartments)
        before = _flat(model[0].parameters()).detach().clone()
        _backward(model, seed=0)
        model[2].weight.grad *= scale
        opt.step()
        return _flat(model[0].parameters()).detach() - before

    same = torch.equal(first_module_update(1.0), first_module_update(-5.0))
    assert same != coupled


def test_directions_depend_on_every_counter_and_reproduce():
    base = dict(seed=1, step=2, compartment=3, chunk=4, worker=5)
    ref = directions(4, 50, **base)
    assert torch.equal(ref, directions(4, 50, **base))
    for key in base:
        other = directions(4, 50, **{**base, key: base[key] + 1})
        assert torch.corrcoef(torch.stack([ref.reshape(-1), other.reshape(-1)]))[0, 1].abs() < 0.3, key
    for distribution in DISTRIBUTIONS:
        v = directions(200, 500, **base, distribution=distribution, dtype=torch.float64)
        assert abs(v.mean().item()) < 0.02 and abs(v.var().item() - 1.0) < 0.03, distribution
    assert set(directions(10, 10, **base, distribution="bernoulli").unique().tolist()) == {-1.0, 1.0}
    assert directions(100, 100, **base, distribution="uniform").abs().max() <= math.sqrt(3.0)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_expected_update_is_lr_dims_over_D_times_gradient(distribution):
    """E[V^T V] = dims I, so with dims >> D the update is close to -lr * dims / D * g (error ~ sqrt(D/dims))."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 4, bias=False).double()
    g = torch.randn(4, 4, dtype=torch.float64)
    layer.weight.grad = g.clone()
    before = layer.weight.detach().clone()
    dims, lr = 16 * 400, 0.5
    RandomBasesDescent(layer.parameters(), lr=lr, dims=dims, compartments="global", distribution=distribution,
                       seed=7, chunk_size=1000).step()
    normalised = (layer.weight.detach() - before) / (lr * dims / 16)
    assert (normalised + g).norm() / g.norm() < 0.2


def _train(opt, model, seeds) -> None:
    for seed in seeds:
        _backward(model, seed)
        opt.step()


@pytest.mark.parametrize("cls", [RandomBasesDescent, FixedProjectionDescent])
def test_state_dict_round_trip_resumes_bit_exactly(cls):
    kw = dict(lr=0.4, dims=5, compartments="module", chunk_size=7)
    whole = _model()
    _train(cls(whole.named_parameters(), seed=3, **kw), whole, range(6))

    first = _model()
    opt = cls(first.named_parameters(), seed=3, **kw)
    _train(opt, first, range(3))
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed = _model(seed=123)
    resumed.load_state_dict(ckpt["model"])
    opt = cls(resumed.named_parameters(), seed=999, **kw)  # the saved seed must win
    opt.load_state_dict(ckpt["optim"])
    _train(opt, resumed, range(3, 6))
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_deepcopy_of_model_and_optimizer_steps_the_same():
    model = _model()
    opt = RandomBasesDescent(model.named_parameters(), lr=0.4, dims=3, chunk_size=7)
    _train(opt, model, [0])
    copy_model, copy_opt = copy.deepcopy((model, opt))
    _train(opt, model, [1])
    _train(copy_opt, copy_model, [1])
    for a, b in zip(model.parameters(), copy_model.parameters()):
        assert torch.equal(a, b)


def test_lr_scheduler_changes_the_step():
    model = _model()
    opt = FixedProjectionDescent(model.named_parameters(), lr=1.0, dims=4, compartments="global")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.25 ** epoch)
    g = _backward(model, seed=0)
    steps = []
    for _ in range(2):
        before = _flat(model.parameters()).detach().clone()
        for p, gi in zip(model.parameters(), torch.split(g, [p.numel() for p in model.parameters()])):
            p.grad = gi.view_as(p).clone()
        opt.step()
        sched.step()
        steps.append(_flat(model.parameters()).detach() - before)
    torch.testing.assert_close(steps[1], 0.25 * steps[0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kwargs", [
    dict(dims=0), dict(dims=-2), dict(dims=2.5), dict(lr=-0.1), dict(lr=float("nan")),
    dict(distribution="cauchy"), dict(compartments="layer"), dict(compartments=0), dict(compartments=40),
    dict(compartments=[[]]), dict(chunk_size=0), dict(seed="0"),
])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        RandomBasesDescent(_model().named_parameters(), **{"lr": 0.1, "dims": 2, **kwargs})


def test_module_compartments_need_names_or_explicit_groups():
    model = _model()
    with pytest.raises(ValueError, match="named_parameters"):
        RandomBasesDescent(model.parameters(), lr=0.1, dims=2)
    with pytest.raises(ValueError, match="exactly once"):
        RandomBasesDescent(model.parameters(), lr=0.1, dims=2, compartments=[list(model[0].parameters())])


def test_make_optimizer_names_and_both_ways_of_giving_modules():
    with pytest.raises(ValueError) as err:
        make_optimizer("lbfgs", _model().parameters())
    assert all(name in str(err.value) for name in OPTIMIZER_NAMES)
    assert type(make_optimizer("sgd", _model().parameters(), lr=0.1)) is torch.optim.SGD
    assert type(make_optimizer("adam", _model().parameters())) is torch.optim.Adam
    assert type(make_optimizer("adam", _model().parameters(), native=True)) is NativeAdam
    assert type(make_optimizer("fpd", _model().named_parameters(), lr=0.1, dims=2)) is FixedProjectionDescent

    named, plain = _model(), _model()
    a = make_optimizer("rbd", named.named_parameters(), lr=0.5, dims=3)
    b = make_optimizer("rbd", plain.parameters(), lr=0.5, dims=3, compartments=module_compartments(plain))
    assert type(a) is RandomBasesDescent and len(a.compartments) == len(b.compartments) == 2
    _train(a, named, [0])
    _train(b, plain, [0])
    for p, q in zip(named.parameters(), plain.parameters()):
        assert torch.equal(p, q)


def _peak_step_bytes(dims: int, chunk_size: int) -> int:
    """Peak bytes allocated on CPU during one step, beyond what existed before it (profiler events)."""
    layer = nn.Linear(100, 40)  # D = 4040, float32
    layer.weight.grad, layer.bias.grad = torch.ones_like(layer.weight), torch.ones_like(layer.bias)
    opt = RandomBasesDescent(layer.parameters(), lr=0.1, dims=dims, compartments="global", chunk_size=chunk_size)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def test_extra_memory_is_one_chunk_whatever_dims():
    small, large = _peak_step_bytes(dims=20, chunk_size=2000), _peak_step_bytes(dims=400, chunk_size=2000)
    assert 2000 * 4 <= small <= large <= 2000 * 4 + 8 * 400 + 4096


@requires_cuda
def test_cuda_update_matches_dense_basis_on_cuda():
    model = _model(device="cuda")
    opt = RandomBasesDescent(model.named_parameters(), lr=0.3, dims=6, compartments="module", seed=5, chunk_size=7)
    theta, g = _flat(model.parameters()).detach().clone(), _backward(model, seed=0)
    opt.step()
    want = _expected(theta, g, [(0, 24), (24, 39)], 0.3, 6, 7, seed=5, step=0)
    torch.testing.assert_close(_flat(model.parameters()), want, rtol=0, atol=1e-10)
