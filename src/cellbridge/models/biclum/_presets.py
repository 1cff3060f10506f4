"""BiCLUM's hyper-parameters and presets (``preset=``).

``"reference"`` reproduces the published code (METHODS §1.4-1.6; RNA+ATAC values from its "PBMC
unpaired" configuration, CITE-seq from "BM CITE-seq"); ``"default"`` is the reference plus
:data:`DEFAULT_CHANGES`, chosen by benchmark on mop_snare and TEA-seq (``docs/methods.md``,
``benchmarks/results/biclum.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..._errors import CellBridgeInputError
from .._params import bounded, resolve

Preset = Literal["reference", "default"]
Modality = Literal["atac", "protein"]
PRESETS: tuple[str, ...] = ("reference", "default")
MODALITIES: tuple[str, ...] = ("atac", "protein")


@dataclass(frozen=True)
class BiCLUMParams:
    """Every hyper-parameter of BiCLUM (see :class:`cellbridge.BiCLUM` for their meaning)."""

    tau_cell: float = bounded(0.5, lo=1e-6)
    tau_feature: float = bounded(0.5, lo=1e-6)
    alpha: float = bounded(1e4, lo=0)
    beta: float = bounded(1e4, lo=0)
    k_mnn: int = bounded(100, lo=1, integer=True)
    n_latent: int = bounded(50, lo=1, integer=True)
    target: Literal["counts", "scaled"] = "counts"
    mnn_rep: Literal["scaled", "pca"] = "scaled"
    mnn_dims: int = bounded(50, lo=1, integer=True)
    mnn_ann: Literal["hnsw", "ivf"] = "hnsw"
    hnsw_ef: int | None = bounded(None, lo=1, none=True, integer=True)
    ivf_nprobe: int = bounded(8, lo=1, integer=True)
    mnn_smooth: int = bounded(0, lo=0, integer=True)
    mnn_smooth_weight: float = bounded(0.3, lo=0, hi=1)
    pair_refine: int = bounded(0, lo=0, integer=True)
    cca_dims: int = bounded(10, lo=1, integer=True)
    cca_reg: float = bounded(0.01, lo=0)
    similarity: Literal["dot", "cosine"] = "dot"
    latent_centering: Literal["none", "per_modality"] = "none"
    feature_mode: Literal["exact", "sampled"] = "exact"
    profile: Literal["cells", "subsample", "metacells"] = "cells"
    n_profile: int | None = bounded(None, lo=2, none=True, integer=True)
    feature_batch: int = bounded(256, lo=2, integer=True)
    lr: float = bounded(1e-4, lo=1e-12)
    weight_decay: float = bounded(5e-5, lo=0)
    batch_size: int = bounded(256, lo=2, integer=True)
    max_epochs: int = bounded(1000, lo=1, integer=True)
    patience: int = bounded(30, lo=1, integer=True)
    gamma: tuple[float, float] = (1.0, 1.0)
    precision: Literal["32", "bf16-mixed"] = "32"

    def replace(self, **changes: Any) -> BiCLUMParams:
        """A validated copy with ``changes`` (None values keep the current value)."""
        return resolve(BiCLUMParams, dataclasses.asdict(self), changes, "BiCLUM", ignore_none=True)


#: Reference values that depend on the other modality (METHODS §1.6).
PER_MODALITY: dict[str, dict[str, Any]] = {
    "atac": dict(tau_cell=0.5, tau_feature=0.5, alpha=1e4, beta=1e4, k_mnn=100, n_latent=50, target="counts"),
    "protein": dict(tau_cell=100.0, tau_feature=50.0, alpha=100.0, beta=1e5, k_mnn=500, n_latent=25,
                    target="scaled"),
}

#: CellBridge's default = the reference plus these changes (each one an option of the reference too).
DEFAULT_CHANGES: dict[str, Any] = dict(
    mnn_rep="pca", k_mnn=30, mnn_ann="ivf", feature_mode="sampled", profile="metacells", n_profile=1024,
    max_epochs=75, mnn_smooth=15, pair_refine=1, cca_reg=1.0, latent_centering="per_modality",
)


def resolve_params(preset: str, modality: str, overrides: dict[str, Any]) -> BiCLUMParams:
    """The preset's values for ``modality``, then the user's explicit overrides (None: unset).

    Parameters
    ----------
    preset
        ``"reference"`` (the published code's values) or ``"default"`` (the reference plus
        :data:`DEFAULT_CHANGES`).
    modality
        The second modality, ``"atac"`` or ``"protein"``; selects the :data:`PER_MODALITY`
        values.
    overrides
        Field name -> value set by the user; a value of None keeps the preset's value, ``gamma``
        is converted to a tuple.

    Returns
    -------
    BiCLUMParams
        The validated hyper-parameters.

    Raises
    ------
    CellBridgeInputError
        For an unknown preset, modality or parameter name, or a value out of its bounds.
    """
    if preset not in PRESETS:
        raise CellBridgeInputError(f"preset must be one of {PRESETS}, got {preset!r}.")
    if modality not in MODALITIES:
        raise CellBridgeInputError(f"modality must be one of {MODALITIES}, got {modality!r}.")
    base = {**PER_MODALITY[modality], **(DEFAULT_CHANGES if preset == "default" else {})}
    overrides = {k: (tuple(v) if k == "gamma" and v is not None else v) for k, v in overrides.items()}
    return resolve(BiCLUMParams, base, overrides, "BiCLUM", ignore_none=True)
