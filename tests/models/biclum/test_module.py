"""BiCLUM network (cellbridge.models.biclum._module)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellbridge.models._nn import Dropout
from cellbridge.models.biclum._module import OTHER, RNA, BiCLUMModule, cell_encoder


def test_cell_encoder_layers():
    enc = cell_encoder(10, 4, n_hidden=16, depth=2, dropout=0.2)
    kinds = [type(m) for m in enc]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU, Dropout] * 2 + [nn.Linear]
    assert enc[2].negative_slope == 0.2 and enc[-1].out_features == 4


def test_module_shapes_and_decoder_by_hand():
    assert (OTHER, RNA) == (0, 1)
    m = BiCLUMModule((6, 7), (9, 11), (5, 8), n_latent=3, n_hidden=16).eval()
    z = m.encode_cells(torch.randn(4, 7), RNA)
    v = m.encode_features(torch.randn(8, 11), RNA)
    assert z.shape == (4, 3) and v.shape == (8, 3)
    # zero-initialised scale and bias: x̂ = softplus(0) z vᵀ = log(2) z vᵀ
    torch.testing.assert_close(m.decode(z, v, RNA), F.softplus(torch.zeros(8)) * (z @ v.T))
    feats = torch.tensor([1, 4])
    torch.testing.assert_close(m.decode(z, v[feats], RNA, feats), m.decode(z, v, RNA)[:, feats])
