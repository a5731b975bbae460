"""Batchwise and samplewise dropout: against dense masked computations, FLOPs, eval scaling."""

from itertools import combinations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from conftest import requires_cuda

from nram.layers import (BatchwiseDropoutLinear, BatchwiseDropoutMLP, SamplewiseDropoutMLP, keep_indices,
                         kept_count)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask(keep: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.float64)
    mask[keep] = 1.0
    return mask


def _rollout(forward, x: torch.Tensor, steps: int) -> torch.Tensor:
    """A cheap recurrence: the first R outputs, squashed, are the next input; loss sums all steps."""
    loss = x.new_zeros(())
    for t in range(steps):
        out = forward(x)
        loss = loss + (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum()
        x = torch.sigmoid(out[:, :x.shape[1]])
    return loss


def test_keep_indices_exact_count_distinct_sorted():
    keep = keep_indices(10, 0.35, generator=_generator())
    assert keep.numel() == kept_count(10, 0.35) == 6
    assert keep.unique().numel() == 6 and torch.equal(keep, keep.sort().values)
    assert kept_count(100, 0.29) == 71 and kept_count(1024, 0.5) == 512
    same_seed = [keep_indices(50, 0.5, generator=_generator(3)) for _ in range(2)]
    assert torch.equal(*same_seed)


def test_mlp_matches_dense_masked_computation_outputs_and_gradients():
    torch.manual_seed(0)
    input_size, hidden, output_size, p = 3, 10, 7, 0.4
    model = BatchwiseDropoutMLP(input_size, hidden, output_size, p=p).double()
    model.resample(_generator(1))
    k = kept_count(hidden, p)
    scale = hidden / k
    masks = [_mask(layer.keep, hidden) for layer in model.layers[:-1]]
    assert not torch.equal(masks[0], masks[1])
    x = torch.rand(5, input_size, dtype=torch.float64)

    def dense(h):
        w = [layer.weight for layer in model.layers]
        b = [layer.bias for layer in model.layers]
        h = torch.relu(F.linear(h, w[0], b[0])) * masks[0]
        h = torch.relu(F.linear(h * scale, w[1], b[1])) * masks[1]
        return F.linear(h * scale, w[2], b[2])

    loss = _rollout(model, x, steps=4)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    dense_loss = _rollout(dense, x, steps=4)
    dense_grads = torch.autograd.grad(dense_loss, list(model.parameters()))
    torch.testing.assert_close(loss, dense_loss, rtol=0, atol=1e-6)
    for g, dg in zip(grads, dense_grads):
        torch.testing.assert_close(g, dg, rtol=0, atol=1e-6)
    # the compact hidden activations really are compact
    assert model.layers[1](torch.zeros(2, k, dtype=torch.float64), model.layers[0].keep).shape == (2, k)


def test_dropped_weights_get_exactly_zero_gradient():
    torch.manual_seed(1)
    model = BatchwiseDropoutMLP(4, 12, 6, p=0.5)
    model.resample(_generator(2))
    _rollout(model, torch.rand(8, 4), steps=3).backward()
    keep0, keep1 = model.layers[0].keep, model.layers[1].keep
    drop0, drop1 = (_mask(k, 12) == 0 for k in (keep0, keep1))
    w0, w1, w2 = (layer.weight.grad for layer in model.layers)
    assert torch.all(w0[drop0] == 0) and torch.all(model.layers[0].bias.grad[drop0] == 0)
    assert torch.all(w1[drop1] == 0) and torch.all(w1[:, drop0] == 0)
    assert torch.all(model.layers[1].bias.grad[drop1] == 0)
    assert torch.all(w2[:, drop1] == 0)
    assert w1[keep1][:, keep0].abs().sum() > 0 and w2[:, keep1].abs().sum() > 0
    # a single layer (no ReLU to kill units): kept entries all receive a gradient
    layer = BatchwiseDropoutLinear(12, 12, p=0.5)
    layer.resample(_generator(3))
    layer(torch.randn(8, keep0.numel()), keep0).square().sum().backward()
    kept = torch.zeros(12, 12, dtype=torch.bool)
    kept[layer.keep[:, None], keep0] = True
    assert torch.all(layer.weight.grad[~kept] == 0) and torch.all(layer.weight.grad[kept] != 0)


@pytest.mark.parametrize("p_in, p_out", [(0.5, 0.5), (0.25, 0.75)])
def test_matmul_flops_scale_with_kept_fractions(p_in, p_out):
    n, batch = 64, 16
    dense = torch.nn.Linear(n, n)
    layer = BatchwiseDropoutLinear(n, n, p=p_out)
    layer.resample(_generator())
    in_keep = keep_indices(n, p_in, generator=_generator(1))

    def count(fn, x):
        with FlopCounterMode(display=False) as counter:
            fn(x).sum().backward()
        return counter.get_total_flops()

    dense_flops = count(dense, torch.randn(batch, n, requires_grad=True))
    sparse_flops = count(lambda x: layer(x, in_keep), torch.randn(batch, in_keep.numel(), requires_grad=True))
    assert sparse_flops == dense_flops * (1 - p_in) * (1 - p_out)


def test_eval_is_full_layer_and_train_expectation_matches_it():
    torch.manual_seed(2)
    n_in, n_out, p_in = 4, 3, 0.5
    layer = BatchwiseDropoutLinear(n_in, n_out, p=0.0).double()
    x = torch.randn(2, n_in, dtype=torch.float64)
    layer.eval()
    full = layer(x)
    torch.testing.assert_close(full, x @ layer.weight.T + layer.bias, rtol=0, atol=1e-12)
    layer.train()
    patterns = combinations(range(n_in), kept_count(n_in, p_in))
    outputs = [layer(x[:, list(keep)], torch.tensor(keep)) for keep in patterns]
    assert len(outputs) == 6
    torch.testing.assert_close(torch.stack(outputs).mean(0), full, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="eval mode"):
        layer.eval()(x[:, :2], torch.tensor([0, 1]))


def test_eval_mlp_is_plain_relu_mlp_and_p0_needs_no_pattern():
    torch.manual_seed(3)
    model = BatchwiseDropoutMLP(3, 8, 5, p=0.5).eval()
    x = torch.randn(4, 3)
    w = model.layers
    hidden = torch.relu(F.linear(x, w[0].weight, w[0].bias))
    plain = w[2](torch.relu(F.linear(hidden, w[1].weight, w[1].bias)))
    torch.testing.assert_close(model(x), plain, rtol=0, atol=0)
    model.train()
    with pytest.raises(RuntimeError, match="resample"):
        model(x)
    no_dropout = BatchwiseDropoutMLP(3, 8, 5, p=0.0)
    no_dropout.load_state_dict(model.state_dict())
    torch.testing.assert_close(no_dropout(x), plain, rtol=0, atol=0)


def test_submatrix_gathered_once_per_rollout(monkeypatch):
    model = BatchwiseDropoutMLP(3, 16, 4, p=0.5)
    calls = []
    index_select = torch.Tensor.index_select

    def counting_index_select(*args, **kwargs):
        calls.append(1)
        return index_select(*args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "index_select", counting_index_select)
    counts = []
    for steps in (1, 6):
        model.resample(_generator(steps))
        calls.clear()
        _rollout(model, torch.rand(5, 3), steps).backward()
        counts.append(len(calls))
    assert counts[0] == counts[1] > 0


def _fresh_output(model: BatchwiseDropoutMLP, x: torch.Tensor) -> torch.Tensor:
    """The output of a new module with the same weights and patterns (nothing cached)."""
    fresh = BatchwiseDropoutMLP(3, 16, 4, p=model.p)
    fresh.load_state_dict(model.state_dict())
    for mine, new in zip(model.layers, fresh.layers):
        if mine.keep is not None:
            new.set_keep(mine.keep)
    return fresh(x)


def test_pattern_held_until_resample_and_cache_follows_weight_updates():
    torch.manual_seed(4)
    model = BatchwiseDropoutMLP(3, 16, 4, p=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.rand(6, 3)
    model.resample(_generator(5))
    keep = model.layers[1].keep
    for _ in range(3):  # same pattern over several optimizer steps
        _rollout(model, x, steps=3).backward()
        optimizer.step()
        optimizer.zero_grad()
        assert model.layers[1].keep is keep
        torch.testing.assert_close(model(x), _fresh_output(model, x), rtol=0, atol=0)
    with torch.no_grad():  # in-place edit after a forward, no backward in between
        model.layers[1].weight.mul_(2.0)
    torch.testing.assert_close(model(x), _fresh_output(model, x), rtol=0, atol=0)
    model.resample(_generator(6))
    assert not torch.equal(model.layers[1].keep, keep)


def test_gradient_accumulation_over_two_backward_passes_with_one_pattern():
    torch.manual_seed(6)
    model = BatchwiseDropoutMLP(3, 16, 4, p=0.5).double()
    model.resample(_generator(7))
    x = torch.rand(6, 3, dtype=torch.float64)
    with torch.no_grad():  # a no-grad forward first must not leave a graph-less cache behind
        model(x)
    _rollout(model, x, steps=3).backward()
    once = [p.grad.clone() for p in model.parameters()]
    _rollout(model, x, steps=3).backward()  # reuses the pattern; the first graph is freed
    for p, g in zip(model.parameters(), once):
        torch.testing.assert_close(p.grad, 2 * g, rtol=0, atol=1e-12)


def test_samplewise_masks_per_example_held_for_rollout():
    torch.manual_seed(5)
    p = 0.5
    model = SamplewiseDropoutMLP(3, 64, 4, p=p)
    x = torch.rand(8, 3)
    model.resample(_generator(7))
    first = model(x)
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)  # masks held across steps
    masks = model._masks
    assert len(masks) == 2 and masks[0].shape == (8, 64)
    assert set(masks[0].unique().tolist()) == {0.0, 1.0 / (1 - p)}
    assert not torch.equal(masks[0][0], masks[0][1])  # per example
    w = model.layers
    manual = w[2](torch.relu(w[1](torch.relu(w[0](x)) * masks[0])) * masks[1])
    torch.testing.assert_close(first, manual, rtol=0, atol=0)
    model.resample(_generator(8))
    assert not torch.equal(model(x), first)
    with pytest.raises(ValueError, match="batch shape"):
        model(x[:3])
    model.eval()
    batchwise = BatchwiseDropoutMLP(3, 64, 4, p=p).eval()
    batchwise.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), batchwise(x), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [BatchwiseDropoutMLP, SamplewiseDropoutMLP])
def test_features_and_readout_weight_compose_to_forward(cls):
    torch.manual_seed(8)
    model = cls(3, 12, 5, p=0.5)
    x = torch.rand(4, 3)
    for training in (True, False):
        model.train(training)
        model.resample(_generator(9))
        hidden = model.features(x)
        weight, bias = model.readout_weight()
        width = kept_count(12, 0.5) if training and cls is BatchwiseDropoutMLP else 12
        assert hidden.shape == (4, width) and weight.shape == (5, width)
        torch.testing.assert_close(F.linear(hidden, weight, bias), model(x), rtol=0, atol=0)
    assert model.readout is model.layers[-1]


def test_invalid_rates_rejected():
    with pytest.raises(ValueError):
        BatchwiseDropoutLinear(4, 4, p=1.0)
    with pytest.raises(ValueError, match="keeps no unit"):
        BatchwiseDropoutMLP(3, 2, 4, p=0.6)


@requires_cuda
@pytest.mark.parametrize("cls", [BatchwiseDropoutMLP, SamplewiseDropoutMLP])
def test_cuda_matches_cpu(cls):
    torch.manual_seed(10)
    cpu = cls(3, 16, 5, p=0.5).double()
    gpu = cls(3, 16, 5, p=0.5).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.rand(6, 3, dtype=torch.float64)
    torch.testing.assert_close(gpu.eval()(x.cuda()).cpu(), cpu.eval()(x))
    gpu.train().resample(torch.Generator(device="cuda").manual_seed(0))
    _rollout(gpu, x.cuda(), steps=3).backward()
    if cls is BatchwiseDropoutMLP:
        cpu.train()
        for mine, theirs in zip(cpu.layers, gpu.layers):
            if theirs.keep is not None:
                mine.set_keep(theirs.keep.cpu())
        _rollout(cpu, x, steps=3).backward()
        for p, q in zip(cpu.parameters(), gpu.parameters()):
            torch.testing.assert_close(q.grad.cpu(), p.grad)
    assert all(p.grad.is_cuda for p in gpu.parameters())
