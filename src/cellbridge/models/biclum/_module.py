"""BiCLUM network (METHODS §1.4): cell and feature encoders per modality, inner-product decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._nn import mlp

OTHER, RNA = 0, 1


def cell_encoder(n_in: int, n_out: int, *, n_hidden: int = 256, depth: int = 2, dropout: float = 0.2) -> nn.Sequential:
    """``depth`` x [Linear -> BatchNorm1d -> LeakyReLU(0.2) -> Dropout], then Linear(n_hidden, n_out)."""
    return mlp([n_in, *[n_hidden] * depth, n_out], activation=lambda: nn.LeakyReLU(0.2), dropout=dropout,
               last_activation=False)


class BiCLUMModule(nn.Module):
    """Tensors in, tensors out. Index 0 is the other modality (ATAC/protein), 1 is RNA.

    Parameters
    ----------
    n_cell_inputs
        Cell-encoder input widths (PCA sizes) per modality.
    n_profile_inputs
        Feature-encoder input widths per modality: the number of cells (exact mode) or of
        summary columns (profile cells / metacells) describing each feature.
    n_features
        Number of model features per modality (decoder outputs).
    n_latent
        Embedding size d shared by cells and features.
    """

    def __init__(
        self,
        n_cell_inputs: tuple[int, int],
        n_profile_inputs: tuple[int, int],
        n_features: tuple[int, int],
        n_latent: int = 50,
        *,
        n_hidden: int = 256,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.cell_encoders = nn.ModuleList(
            cell_encoder(n, n_latent, n_hidden=n_hidden, dropout=dropout) for n in n_cell_inputs
        )
        self.feature_encoders = nn.ModuleList(
            cell_encoder(n, n_latent, n_hidden=n_hidden, dropout=dropout) for n in n_profile_inputs
        )
        self.scale = nn.ParameterList(nn.Parameter(torch.zeros(m)) for m in n_features)
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(m)) for m in n_features)
        # Per-modality mean of the training cells' encoder outputs, set after training
        # (``latent_centering="per_modality"``; zeros otherwise): the joint space's origin.
        self.register_buffer("latent_mean", torch.zeros(len(n_features), n_latent))

    def encode_cells(self, x: torch.Tensor, modality: int) -> torch.Tensor:
        """Encoder output (training space)."""
        return self.cell_encoders[modality](x)

    def embed_cells(self, x: torch.Tensor, modality: int) -> torch.Tensor:
        """Position in the joint space: the encoder output minus its modality's training mean."""
        return self.cell_encoders[modality](x) - self.latent_mean[modality]

    def decode_joint(self, z: torch.Tensor, v: torch.Tensor, modality: int) -> torch.Tensor:
        """:meth:`decode` of points of the joint space: ``modality``'s training mean added back,
        so a training cell decodes exactly as in training."""
        return self.decode(z + self.latent_mean[modality], v, modality)

    def encode_features(self, profiles: torch.Tensor, modality: int) -> torch.Tensor:
        return self.feature_encoders[modality](profiles)

    def decode(self, z: torch.Tensor, v: torch.Tensor, modality: int, features: torch.Tensor | None = None) -> torch.Tensor:
        """x̂ = softplus(s) ⊙ (z vᵀ) + b, restricted to ``features`` (indices) when given."""
        scale, bias = self.scale[modality], self.bias[modality]
        if features is not None:
            scale, bias = scale[features], bias[features]
        return F.softplus(scale) * (z @ v.T) + bias
