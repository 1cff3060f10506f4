"""Network building blocks shared by the models."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` whose mask, on CPU, comes from a uniform draw.

    Each value is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``, as in torch's
    dropout. On CPU torch draws the mask with its Bernoulli sampler, which takes about twice as
    long (``benchmarks/probes/optimizer_step.py dropout``); the draws differ, the distribution is the
    same. Other devices use torch's kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0 < self.p < 1:
            return super().forward(x)
        # drawn in float32 whatever x's dtype: a bfloat16 uniform is too coarse to keep exactly 1 - p
        mask = torch.rand(x.shape, device=x.device).ge_(self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x.mul_(mask) if self.inplace else x * mask


def mlp(
    dims: Sequence[int],
    *,
    activation: Callable[[], nn.Module] = nn.ReLU,
    dropout: float = 0.0,
    last_activation: bool = True,
) -> nn.Sequential:
    """Fully connected layers ``dims[0] -> dims[1] -> ... -> dims[-1]``.

    Every layer is Linear -> BatchNorm1d -> ``activation()`` (-> :class:`Dropout` when ``dropout > 0``);
    with ``last_activation=False`` the last layer is a plain Linear.
    """
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(d_in, d_out))
        if last_activation or i < len(dims) - 2:
            layers += [nn.BatchNorm1d(d_out), activation()]
            if dropout > 0:
                layers.append(Dropout(dropout))
    return nn.Sequential(*layers)
