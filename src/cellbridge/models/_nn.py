"""Network building blocks shared by the models."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from torch import nn


def mlp(
    dims: Sequence[int],
    *,
    activation: Callable[[], nn.Module] = nn.ReLU,
    dropout: float = 0.0,
    last_activation: bool = True,
) -> nn.Sequential:
    """Fully connected layers ``dims[0] -> dims[1] -> ... -> dims[-1]``.

    Every layer is Linear -> BatchNorm1d -> ``activation()`` (-> Dropout when ``dropout > 0``);
    with ``last_activation=False`` the last layer is a plain Linear.
    """
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(d_in, d_out))
        if last_activation or i < len(dims) - 2:
            layers += [nn.BatchNorm1d(d_out), activation()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
