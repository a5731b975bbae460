"""Deep gated networks: ReLU equivalence, the path decomposition, frozen gates, gate monitoring."""

import math
from itertools import product

import pytest
import torch
import torch.nn.functional as F

from nram.gated import GatedMLP
from training.diagnostics import GateAdaptation


def _relu_mlp(model: GatedMLP, x: torch.Tensor) -> torch.Tensor:
    for layer in model.layers[:-1]:
        x = F.relu(layer(x))
    return model.layers[-1](x)


def test_hard_tied_gating_is_relu_mlp_outputs_and_gradients():
    torch.manual_seed(0)
    model = GatedMLP(4, 16, 5, gating="hard")
    x = torch.randn(32, 4)
    out, ref = model(x), _relu_mlp(model, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    params = list(model.parameters())
    grads = torch.autograd.grad(out.square().sum(), params)
    for g, rg in zip(grads, torch.autograd.grad(ref.square().sum(), params)):
        torch.testing.assert_close(g, rg, rtol=0, atol=0)


def test_decoupled_hard_gates_copied_from_relu_net_reproduce_it():
    torch.manual_seed(1)
    relu_net = GatedMLP(4, 16, 5, gating="hard")
    model = GatedMLP(4, 16, 5, gating="decoupled", beta=math.inf, adaptive=False)
    model.load_state_dict(relu_net.state_dict(), strict=False)  # value weights
    x = torch.randn(32, 4)
    assert not torch.allclose(model(x), relu_net(x))  # random gates: a different function
    model.load_gating(relu_net)
    torch.testing.assert_close(model(x), relu_net(x), rtol=0, atol=0)
    other = GatedMLP(4, 16, 5, gating="decoupled", beta=math.inf)
    other.load_state_dict(relu_net.state_dict(), strict=False)
    other.load_gating(relu_net.state_dict())  # from a state dict (plain MLP layout)
    torch.testing.assert_close(other(x), relu_net(x), rtol=0, atol=0)
    source = GatedMLP(4, 16, 5, gating="decoupled")
    third = GatedMLP(4, 16, 5, gating="decoupled")
    third.load_gating(source)  # from another decoupled net: its gating layers, not its value layers
    for mine, theirs in zip(third.gating_layers, source.gating_layers):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)


def test_load_gating_from_plain_sequential_relu_mlp():
    torch.manual_seed(6)
    nn = torch.nn
    sequential = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    model = GatedMLP(3, 8, 2, gating="decoupled", beta=math.inf, adaptive=False)
    for mine, theirs in zip(model.layers, sequential[::2]):
        mine.load_state_dict(theirs.state_dict())
    model.load_gating(sequential)
    x = torch.randn(10, 3)
    torch.testing.assert_close(model(x), sequential(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot take"):
        GatedMLP(3, 9, 2, gating="decoupled").load_gating(sequential)


def test_gradients_flow_through_soft_and_decoupled_gates():
    torch.manual_seed(7)
    beta, eps = 3.0, 0.1
    x = torch.randn(5, 3)
    tied = GatedMLP(3, 8, 2, num_hidden=1, gating="soft", beta=beta, eps=eps)
    w0, w1 = tied.layers
    q = w0(x)
    manual = w1(q * (1 + eps) * torch.sigmoid(beta * q))
    params = list(tied.parameters())
    for g, mg in zip(torch.autograd.grad(tied(x).sum(), params), torch.autograd.grad(manual.sum(), params)):
        torch.testing.assert_close(g, mg)
    decoupled = GatedMLP(3, 8, 2, gating="decoupled", beta=beta)
    decoupled(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoupled.gating_layers.parameters())


def test_soft_gate_values():
    torch.manual_seed(2)
    beta, eps = 4.0, 0.1
    x = torch.randn(6, 3)
    tied = GatedMLP(3, 8, 2, gating="soft", beta=beta, eps=eps)
    torch.testing.assert_close(tied.gate_values(x)[0], (1 + eps) * torch.sigmoid(beta * tied.layers[0](x)))
    decoupled = GatedMLP(3, 8, 2, gating="decoupled", beta=beta, eps=eps)
    r1 = decoupled.gating_layers[0](x)
    f1 = r1 * (1 + eps) * torch.sigmoid(beta * r1)
    gates = decoupled.gate_values(x)
    torch.testing.assert_close(gates[0], (1 + eps) * torch.sigmoid(beta * r1))
    torch.testing.assert_close(gates[1], (1 + eps) * torch.sigmoid(beta * decoupled.gating_layers[1](f1)))
    assert not gates[0].requires_grad


@pytest.mark.parametrize("gating", ["hard", "soft", "decoupled"])
def test_output_is_sum_over_paths(gating):
    """y_o = sum_p x[p0] prod_l G_l[p_l] * W1[p1, p0] W2[p2, p1] W3[o, p2] (float64, no biases)."""
    torch.manual_seed(3)
    d, h, out = 2, 3, 2
    model = GatedMLP(d, h, out, num_hidden=2, gating=gating, beta=2.0, eps=0.1, bias=False).double()
    x = torch.randn(4, d, dtype=torch.float64)
    g1, g2 = model.gate_values(x)
    w1, w2, w3 = (layer.weight for layer in model.layers)
    expected = torch.zeros(4, out, dtype=torch.float64)
    for p0, p1, p2, o in product(range(d), range(h), range(h), range(out)):
        phi = x[:, p0] * g1[:, p1] * g2[:, p2]
        expected[:, o] += phi * w1[p1, p0] * w2[p2, p1] * w3[o, p2]
    torch.testing.assert_close(model(x).detach(), expected, rtol=0, atol=1e-12)


def test_features_and_readout_weight_compose_to_forward():
    torch.manual_seed(9)
    model = GatedMLP(3, 8, 4, gating="decoupled")
    x = torch.randn(5, 3)
    hidden = model.features(x)
    assert hidden.shape == (5, 8) and model.readout is model.layers[-1]
    torch.testing.assert_close(F.linear(hidden, *model.readout_weight()), model(x), rtol=0, atol=0)


def test_frozen_gates_receive_no_updates():
    torch.manual_seed(4)
    model = GatedMLP(3, 8, 4, gating="decoupled", adaptive=False)
    assert not model.adaptive and GatedMLP(3, 8, 4, gating="decoupled").adaptive
    frozen = {k: v.clone() for k, v in model.gating_layers.state_dict().items()}
    values = {k: v.clone() for k, v in model.layers.state_dict().items()}
    for optimizer in (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1),
                      torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)):
        for _ in range(3):
            model(torch.randn(16, 3)).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    for k, v in model.gating_layers.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert all(not torch.equal(v, values[k]) for k, v in model.layers.state_dict().items())
    with pytest.raises(ValueError, match="decoupled"):
        GatedMLP(3, 8, 4, gating="soft", adaptive=False)


def test_gate_adaptation_measures_and_logs():
    torch.manual_seed(5)

    class Wrapper(torch.nn.Module):  # a model that contains the gated net, like an NRAM
        def __init__(self):
            super().__init__()
            self.controller = GatedMLP(3, 10, 2, gating="soft", beta=4.0)

    model = Wrapper()
    probes = torch.rand(20, 3)
    monitor = GateAdaptation(model, probes)
    assert monitor.measure() == {"flipped_fraction": 0.0, "mean_soft_change": 0.0}
    net = model.controller
    before = net.gate_values(probes)
    with torch.no_grad():
        net.layers[0].weight.neg_()  # q -> q - 2 W x: flips gates where the bias cannot hold them
        net.layers[0].bias.zero_()
    after = net.gate_values(probes)
    flips = torch.cat([(a > 0.5) != (b > 0.5) for a, b in zip(after, before)], 1).double().mean().item()
    change = torch.cat([(a - b).abs() for a, b in zip(after, before)], 1).double().mean().item()
    assert flips > 0.2

    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[(tag, step)] = value

    writer = Writer()
    values = monitor.log(writer, step=7)
    assert values["flipped_fraction"] == pytest.approx(flips, abs=1e-12)
    assert values["mean_soft_change"] == pytest.approx(change, abs=1e-12)
    assert writer.scalars == {("gates/flipped_fraction", 7): values["flipped_fraction"],
                              ("gates/mean_soft_change", 7): values["mean_soft_change"]}
    resumed = GateAdaptation(model, torch.zeros(20, 3))  # built after the change: its own step 0
    assert resumed.measure()["flipped_fraction"] == 0.0
    resumed.load_state_dict(monitor.state_dict())  # what a checkpoint carries
    assert resumed.measure() == monitor.measure()
    with pytest.raises(ValueError, match="gate_values"):
        GateAdaptation(torch.nn.Linear(3, 2), probes)
