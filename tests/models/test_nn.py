"""Network building blocks (cellbridge.models._nn)."""

from __future__ import annotations

import torch
from torch import nn

from cellbridge.models._nn import mlp


def test_mlp_layers():
    net = mlp([5, 8, 3])
    assert [type(m) for m in net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert (net[0].in_features, net[0].out_features, net[3].out_features) == (5, 8, 3)


def test_mlp_dropout_activation_and_plain_last_layer():
    net = mlp([4, 6, 6, 2], activation=nn.Tanh, dropout=0.1, last_activation=False)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Dropout, nn.Linear, nn.BatchNorm1d, nn.Tanh,
                     nn.Dropout, nn.Linear]
    assert net[3].p == 0.1
    assert net.eval()(torch.zeros(3, 4)).shape == (3, 2)
