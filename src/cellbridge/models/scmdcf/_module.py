"""scMDCF network (METHODS §2.2): two encoders, a fusion block giving ``z``, two decoders, DEC
centroids. Tensors in, tensors out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._nn import mlp


class ScMDCFModule(nn.Module):
    """Two encoders, a fusion block giving ``z``, two decoders from ``z`` and DEC centroids.

    Parameters
    ----------
    n_rna, n_other
        Input widths of the two modalities.
    enc_hidden
        Encoder widths after the input, e.g. ``(512, 64)`` (ATAC) or ``(512, 64, 8)`` (ADT).
    fusion_hidden
        Fusion widths between the concatenated codes and ``z`` (``(32,)`` ATAC, ``()`` ADT).
    dec_hidden
        Decoder widths between ``z`` and the output, e.g. ``(64, 512)``.
    z_dim, n_clusters
        Width of the fused embedding and number of DEC centroids.
    output_activation
        ``"relu_bn"`` (reference) or ``"linear"`` decoder output layer (defect E2).
    latent_activation
        ``"relu_bn"`` (reference) or ``"linear"`` last fusion layer.
    """

    def __init__(
        self,
        n_rna: int,
        n_other: int,
        *,
        enc_hidden: Sequence[int] = (512, 64),
        fusion_hidden: Sequence[int] = (32,),
        dec_hidden: Sequence[int] = (64, 512),
        z_dim: int = 8,
        n_clusters: int = 2,
        output_activation: str = "relu_bn",
        latent_activation: str = "relu_bn",
    ):
        super().__init__()
        out_act = output_activation == "relu_bn"
        self.enc_rna = mlp([n_rna, *enc_hidden])
        self.enc_other = mlp([n_other, *enc_hidden])
        self.fusion = mlp([2 * enc_hidden[-1], *fusion_hidden, z_dim],
                          last_activation=latent_activation == "relu_bn")
        self.dec_rna = mlp([z_dim, *dec_hidden, n_rna], last_activation=out_act)
        self.dec_other = mlp([z_dim, *dec_hidden, n_other], last_activation=out_act)
        self.centers = nn.Parameter(torch.zeros(n_clusters, z_dim))

    def forward(self, x_rna: torch.Tensor, x_other: torch.Tensor) -> dict[str, torch.Tensor]:
        h_rna, h_other = self.enc_rna(x_rna), self.enc_other(x_other)
        z = self.fusion(torch.cat([h_rna, h_other], dim=1))
        return {"h_rna": h_rna, "h_other": h_other, "z": z,
                "rec_rna": self.dec_rna(z), "rec_other": self.dec_other(z)}
