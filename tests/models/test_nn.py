"""Network building blocks (cellbridge.models._nn)."""

from __future__ import annotations

import torch
from torch import nn

from cellbridge.models._nn import Dropout, mlp


def test_mlp_layers():
    net = mlp([5, 8, 3])
    assert [type(m) for m in net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert (net[0].in_features, net[0].out_features, net[3].out_features) == (5, 8, 3)


def test_mlp_dropout_activation_and_plain_last_layer():
    net = mlp([4, 6, 6, 2], activation=nn.Tanh, dropout=0.1, last_activation=False)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Tanh, Dropout, nn.Linear, nn.BatchNorm1d, nn.Tanh,
                     Dropout, nn.Linear]
    assert net[3].p == 0.1
    assert net.eval()(torch.zeros(3, 4)).shape == (3, 2)


def test_dropout_keeps_one_minus_p_and_rescales():
    torch.manual_seed(0)
    layer = Dropout(0.2)
    x = torch.ones(400, 500, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1.25))
    y.sum().backward()  # the gradient is the mask
    assert torch.equal(x.grad, y.detach())
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x) and not Dropout(1.0).train()(x).any()


def test_dropout_masks_follow_torch_seed():
    layer = Dropout(0.5)
    torch.manual_seed(3)
    a = layer(torch.ones(50, 20))
    torch.manual_seed(3)
    assert torch.equal(a, layer(torch.ones(50, 20)))


def test_dropout_keeps_dtype_and_rate_in_bfloat16():
    torch.manual_seed(0)
    y = Dropout(0.2)(torch.ones(1000, 1000, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert abs((y != 0).float().mean().item() - 0.8) < 0.001  # a bfloat16 uniform would keep about 0.798
