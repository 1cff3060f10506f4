"""scMDCF's hyper-parameters and presets (``preset=``).

``"reference"`` reproduces the published code (METHODS §2.2-2.4); ``"default"`` is ours, chosen
by ``benchmarks/suites/scmdcf.py`` (results in ``docs/scmdcf.md``; what was tried in
``benchmarks/README.md``, "History of the scMDCF default").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..._errors import CellBridgeInputError
from .._params import bounded, resolve

PRESETS: tuple[str, ...] = ("default", "reference")
ClusterMethod = Literal["kmeans", "kmeans_dec_init", "leiden", "dec"]
CLUSTER_METHODS: tuple[str, ...] = ("kmeans", "kmeans_dec_init", "leiden", "dec")
Optimizer = Literal["adam", "adadelta"]
Activation = Literal["relu_bn", "linear"]


@dataclass(frozen=True)
class ScMDCFParams:
    """Every hyper-parameter of scMDCF (reference values for RNA+ATAC; :func:`resolve_params`
    sets the CITE-seq ones)."""

    # network (§2.2)
    enc_hidden: tuple[int, ...] = (512, 64)
    fusion_hidden: tuple[int, ...] = (32,)
    dec_hidden: tuple[int, ...] = (64, 512)
    z_dim: int = bounded(8, lo=1, integer=True)
    output_activation: Activation = "relu_bn"
    latent_activation: Activation = "relu_bn"
    # losses (§2.3)
    lamb: float = bounded(10.0, lo=0)
    alpha: float = bounded(1.0, lo=1e-6)
    # training (§2.4); 0 epochs skips a phase
    pretrain_epochs: int = bounded(200, lo=0, integer=True)
    finetune_epochs: int = bounded(200, lo=0, integer=True)
    pretrain_optimizer: Optimizer = "adam"
    pretrain_lr: float = bounded(1e-2, lo=1e-12)
    finetune_optimizer: Optimizer = "adadelta"
    finetune_lr: float = bounded(1e-3, lo=1e-12)
    rho: float = bounded(0.8, lo=0, hi=1)
    pretrain_weights: Mapping[str, float] = field(default_factory=lambda: {"rec_rna": 1.0, "rec_other": 1.0, "cl": 0.1})
    finetune_weights: Mapping[str, float] = field(
        default_factory=lambda: {"rec_rna": 0.1, "rec_other": 10.0, "kl": 1.0, "cl": 5.0})
    dec_target: Literal["live", "fixed"] = "live"
    target_update_interval: int = bounded(1, lo=1, integer=True)
    batch_size: int | None = bounded(None, lo=2, none=True, integer=True)
    full_batch_max: int | None = bounded(None, lo=0, none=True, integer=True)
    # preprocessing (§2.1)
    n_top_rna: int = bounded(2500, lo=1, integer=True)
    n_top_other: int | None = bounded(2500, lo=1, none=True, integer=True)
    atac_representation: Literal["hvf", "lsi", "pca"] = "hvf"
    n_lsi: int = bounded(50, lo=1, integer=True)
    rna_representation: Literal["hvf", "pca"] = "hvf"
    n_pcs: int = bounded(50, lo=1, integer=True)
    clip: float | None = bounded(None, lo=1e-6, none=True)
    # per-modality loss weights from the data (not in the reference)
    modality_weighting: Literal["none", "agreement"] = "none"
    modality_weight_power: float = bounded(1.0, lo=0)
    modality_weight_floor: float = bounded(0.0, lo=0, hi=1)
    # clustering
    cluster_method: ClusterMethod = "kmeans"
    n_init: int = bounded(20, lo=1, integer=True)
    # ensemble of independently seeded models, labels by consensus (not in the reference)
    n_models: int = bounded(1, lo=1, integer=True)
    ensemble_max_cells: int | None = bounded(None, lo=1, none=True, integer=True)
    ensemble_combine: Literal["consensus", "select"] = "consensus"
    leiden_resolution: float = bounded(1.0, lo=1e-6)

    def replace(self, **changes: Any) -> ScMDCFParams:
        """A validated copy with ``changes``."""
        return resolve(ScMDCFParams, _fields(self), changes, "scMDCF")

    def effective_batch_size(self, n_cells: int) -> int | None:
        """None (full batch) when no batch size is set or the data has at most ``full_batch_max``
        cells."""
        if self.batch_size is None or (self.full_batch_max is not None and n_cells <= self.full_batch_max):
            return None
        return int(self.batch_size)

    def effective_n_models(self, n_cells: int) -> int:
        """``n_models``, or 1 above ``ensemble_max_cells`` cells (training cost grows with the members)."""
        if self.ensemble_max_cells is not None and n_cells > self.ensemble_max_cells:
            return 1
        return int(self.n_models)

    def sparse_threshold(self) -> int | None:
        """Cell count above which the prepared inputs are kept sparse: exactly where training
        switches to mini-batches (:meth:`effective_batch_size`): never with ``batch_size=None``,
        above ``full_batch_max`` otherwise (always when it is None)."""
        if self.batch_size is None:
            return None
        return 0 if self.full_batch_max is None else int(self.full_batch_max)


def check_n_clusters(n_clusters: Any, n_cells: int | None = None) -> None:
    """Refuse a K that is not None or a whole number from 2 to ``n_cells`` (when known).

    Parameters
    ----------
    n_clusters
        The number of clusters asked for (None: estimated).
    n_cells
        The number of cells, when known (K may not exceed it).

    Raises
    ------
    CellBridgeInputError
        Naming the valid range.
    """
    if n_clusters is None:
        return
    upper = "the number of cells" if n_cells is None else f"the number of cells ({n_cells})"
    whole = not isinstance(n_clusters, bool) and isinstance(n_clusters, (int, float)) and int(n_clusters) == n_clusters
    if not whole or n_clusters < 2 or (n_cells is not None and n_clusters > n_cells):
        raise CellBridgeInputError(
            f"`n_clusters`={n_clusters!r} is invalid: it must be a whole number between 2 and {upper}; "
            "pass another K, or None to estimate it.")


def _fields(params: ScMDCFParams) -> dict[str, Any]:
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


def _reference(modality: str) -> dict[str, Any]:
    if modality == "atac":
        return {}
    return dict(enc_hidden=(512, 64, 8), fusion_hidden=(), lamb=0.5, n_top_rna=1000, n_top_other=None)


#: CellBridge's default = the reference plus these changes, chosen by benchmark (benchmarks/README.md):
#: principal components of each modality as encoder inputs (RNA; ATAC from its HVF peaks;
#: proteins stay z-scored), linear decoder outputs (defect E2), reconstruction / contrastive
#: weights scaled by each modality's label-free informativeness (power 4; a modality weighted
#: below 0.2 is left out of the losses), final KMeans started from the fine-tuned DEC centroids;
#: up to 5,000 cells an ensemble of 5 models combined by consensus; mini-batches of 256 above
#: 20,000 cells.
DEFAULT_CHANGES: dict[str, Any] = dict(
    rna_representation="pca", atac_representation="pca", output_activation="linear",
    modality_weighting="agreement", modality_weight_power=4.0, modality_weight_floor=0.2,
    cluster_method="kmeans_dec_init", batch_size=256, full_batch_max=20000, n_models=5,
    ensemble_max_cells=5000,
)


def resolve_params(preset: str, modality: str, overrides: dict[str, Any]) -> ScMDCFParams:
    """The preset's hyper-parameters for ``modality`` with ``overrides`` applied (validated).

    Parameters
    ----------
    preset
        ``"default"`` (the reference plus :data:`DEFAULT_CHANGES`) or ``"reference"`` (the
        published code's values).
    modality
        The second modality: ``"atac"``; any other value (``"protein"``) selects the CITE-seq
        reference values.
    overrides
        Field name -> value set by the user (dict values are merged into the preset's dict;
        ``*_hidden`` values are converted to tuples).

    Returns
    -------
    ScMDCFParams
        The validated hyper-parameters.

    Raises
    ------
    CellBridgeInputError
        For an unknown preset or parameter name, or a value out of its bounds.
    """
    if preset not in PRESETS:
        raise CellBridgeInputError(f"Unknown scMDCF preset {preset!r}; choose one of {PRESETS}.")
    base = {**_reference(modality), **(DEFAULT_CHANGES if preset == "default" else {})}
    overrides = {k: (tuple(v) if k.endswith("_hidden") else v) for k, v in overrides.items()}
    return resolve(ScMDCFParams, base, overrides, "scMDCF")
