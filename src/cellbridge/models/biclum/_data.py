"""BiCLUM's input preparation (METHODS §1.2-1.3, 1.6): per-modality normalisation, scaling and
PCA fitted once and re-applicable to new cells; feature pairs; cross-modal MNN cell pairs; the
feature-encoder profiles; the per-epoch partner sampler."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from sklearn.decomposition import PCA

from ..._errors import CellBridgeInputError
from ..._utils import subsample_rows
from ..._validate import check_modality, is_integer_matrix
from ...neighbors import knn, mnn_pairs, smooth_over_neighbors
from ...pp._matrix import (
    cca,
    clr_normalize,
    column_mean_std,
    highly_variable,
    library_normalize_log,
    median_total,
    take,
)
from ._presets import MODALITIES, BiCLUMParams

MAX_FIT_CELLS = 50_000  # cells used to fit a PCA

logger = logging.getLogger("cellbridge")

ARRAYS = ("mean", "std", "components", "center")


@dataclass
class ExpressionTransform:
    """Fitted per-modality transform: normalise -> scale -> PCA, re-applicable to new cells.

    ``kind`` is ``"lognorm"`` (library size to ``target_sum`` then log1p) or ``"clr"`` (protein).
    """

    kind: str
    features: list[str]
    target_sum: float = 1e4
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    std: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    components: np.ndarray | None = None  # n_pcs x n_features
    center: np.ndarray | None = None  # PCA centre in scaled space (0 when fitted on all cells)

    def normalize(self, X) -> np.ndarray | sp.csr_matrix:
        """Library-size + log1p (sparse stays sparse) or CLR (dense)."""
        if self.kind == "clr":
            return clr_normalize(X)
        return library_normalize_log(X, self.target_sum)

    def fit(self, X_counts, n_pcs: int, seed: int = 0, max_fit_cells: int = MAX_FIT_CELLS):
        """Fit on training counts (cells x ``features``); return the normalised matrix.

        Means and standard deviations come from all cells without densifying; the PCA is fitted
        on the scaled values of all cells, or of a seeded subsample of ``max_fit_cells`` above that.
        """
        if self.kind == "lognorm":
            self.target_sum = median_total(X_counts)
        Xn = self.normalize(X_counts)
        self.mean, self.std = column_mean_std(Xn)
        rows = subsample_rows(Xn.shape[0], max_fit_cells, seed)
        scaled = self.scale_normalized(Xn if rows is None else Xn[rows])
        n_comp = max(1, min(n_pcs, scaled.shape[0] - 1, scaled.shape[1] - 1 if scaled.shape[1] > 1 else 1))
        pca = PCA(n_components=n_comp, random_state=seed, svd_solver="full" if scaled.shape[1] <= 500 else "auto")
        pca.fit(scaled)
        self.components = pca.components_.astype(np.float32)
        self.center = pca.mean_.astype(np.float32)
        return Xn

    def scale_normalized(self, Xn) -> np.ndarray:
        """Dense z-scored values of normalised rows."""
        Xn = Xn.toarray() if sp.issparse(Xn) else np.asarray(Xn)
        return ((Xn - self.mean) / self.std).astype(np.float32)

    def scale(self, X_counts) -> np.ndarray:
        return self.scale_normalized(self.normalize(X_counts))

    def pca_normalized(self, Xn) -> np.ndarray:
        """PCA coordinates of normalised rows without densifying them (sparse x dense product)."""
        weights = (self.components / self.std).T
        offset = (self.mean / self.std + self.center) @ self.components.T
        return np.asarray(Xn @ weights - offset, dtype=np.float32)

    def embed(self, X_counts) -> np.ndarray:
        """Cell-encoder input of new cells: normalise, scale and project with the training fit."""
        return self.pca_normalized(self.normalize(X_counts))

    def to_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able metadata and the fitted arrays (saved as tensors, not in JSON)."""
        meta = {"kind": self.kind, "features": list(self.features), "target_sum": self.target_sum}
        return meta, {"mean": self.mean, "std": self.std, "components": self.components, "center": self.center}

    @classmethod
    def from_dict(cls, meta: dict, arrays: dict[str, np.ndarray]) -> ExpressionTransform:
        return cls(meta["kind"], list(meta["features"]), meta["target_sum"],
                   *(np.asarray(arrays[k], np.float32) for k in ARRAYS))


@dataclass
class ModalityData:
    """One modality ready for BiCLUM, kept sparse: normalised values, raw values, PCA input."""

    transform: ExpressionTransform
    normalized: sp.csr_matrix | np.ndarray  # cells x features, log-normalised (sparse) or CLR
    counts: sp.csr_matrix  # cells x features: raw values of the model features
    pca: np.ndarray  # cells x n_pcs: cell-encoder input

    @property
    def features(self) -> list[str]:
        return self.transform.features

    @property
    def n_cells(self) -> int:
        return self.counts.shape[0]

    def scaled(self, rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
        """Dense z-scored values of the selected rows / columns (all by default)."""
        X = self.normalized if rows is None else self.normalized[rows]
        if cols is None:
            return self.transform.scale_normalized(X)
        t = self.transform
        X = X[:, cols]
        X = X.toarray() if sp.issparse(X) else np.asarray(X)
        return ((X - t.mean[cols]) / t.std[cols]).astype(np.float32)

    def values(self, kind: str, rows: np.ndarray | None = None):
        """Raw values (``"counts"``, sparse) or z-scored values (``"scaled"``, dense) of rows."""
        if kind == "counts":
            return self.counts if rows is None else self.counts[rows]
        if kind == "scaled":
            return self.scaled(rows)
        raise CellBridgeInputError(f"target must be 'counts' or 'scaled', got {kind!r}.")

    def project_columns(self, cols: np.ndarray, components: np.ndarray, center: np.ndarray) -> np.ndarray:
        """Scaled values of ``cols`` projected on ``components`` (rows of a PCA), without densifying."""
        t = self.transform
        weights = (components / t.std[cols]).T
        offset = (t.mean[cols] / t.std[cols] + center) @ components.T
        X = self.normalized if np.array_equal(cols, np.arange(self.normalized.shape[1])) else self.normalized[:, cols]
        return np.asarray(X @ weights - offset, dtype=np.float32)


@dataclass
class UnpairedData:
    """Both modalities plus feature pairs ``(other feature index, rna feature index)``."""

    modality: str
    other: ModalityData
    rna: ModalityData
    feature_pairs: np.ndarray
    report: dict

    def shared_views(self, rows: tuple = (None, None)) -> tuple[np.ndarray, np.ndarray]:
        """Dense scaled values of the paired features in each modality (the reference MNN input)."""
        o, r = self.feature_pairs[:, 0], self.feature_pairs[:, 1]
        return self.other.scaled(rows[0], o), self.rna.scaled(rows[1], r)

    def shared_pca(self, n_comps: int = 50, *, seed: int = 0, max_fit_cells: int = MAX_FIT_CELLS):
        """Joint PCA of both modalities' scaled paired features (fitted on at most ``max_fit_cells``
        seeded cells per modality, then every cell projected without densifying)."""
        rows = (subsample_rows(self.other.n_cells, max_fit_cells, seed),
                subsample_rows(self.rna.n_cells, max_fit_cells, seed + 1))
        a, b = self.shared_views(rows)
        n_comps = max(1, min(n_comps, a.shape[1] - 1, len(a) + len(b) - 1))
        pca = PCA(n_components=n_comps, random_state=seed).fit(np.vstack([a, b]))
        comps, center = pca.components_.astype(np.float32), pca.mean_.astype(np.float32)
        return (self.other.project_columns(self.feature_pairs[:, 0], comps, center),
                self.rna.project_columns(self.feature_pairs[:, 1], comps, center))


def prepare_unpaired(
    rna: AnnData,
    other: AnnData,
    *,
    modality: str = "atac",
    n_top_genes: int = 2000,
    n_pcs: int = 100,
    protein_map: pd.DataFrame | dict | str | None = None,
    layer_rna: str | None = None,
    layer_other: str | None = None,
    seed: int = 0,
) -> UnpairedData:
    """Preprocess RNA and gene activity (or ADT) for BiCLUM without touching the inputs.

    Parameters
    ----------
    rna
        Cells x genes raw counts.
    other
        ``modality="atac"``: cells x genes gene activity (see :func:`cellbridge.pp.gene_activity`).
        ``modality="protein"``: cells x proteins raw ADT counts.
    n_top_genes
        Highly variable genes per modality; the union is used in both (§1.2).
    n_pcs
        PCA size of the cell-encoder input (capped below the number of features).
    protein_map
        Protein -> gene table overriding the built-in one (``modality="protein"``).
    layer_rna, layer_other
        Layers holding the raw values (default ``.X``).
    """
    if modality not in MODALITIES:
        raise CellBridgeInputError(f"modality must be one of {MODALITIES}, got {modality!r}.")
    X_rna = check_modality(rna, "rna", layer=layer_rna, counts=True)
    X_other = check_modality(other, "other", layer=layer_other, counts=(modality == "protein"))
    if modality == "atac":
        return _prepare_gene_activity(rna, other, X_rna, X_other, n_top_genes, n_pcs, seed)
    return _prepare_protein(rna, other, X_rna, X_other, n_top_genes, n_pcs, protein_map, seed)


def _prepare_gene_activity(rna, other, X_rna, X_other, n_top, n_pcs, seed) -> UnpairedData:
    shared = rna.var_names.intersection(other.var_names, sort=False)
    if len(shared) == 0:
        raise CellBridgeInputError(
            f"`rna` ({rna.n_vars} genes, e.g. {list(rna.var_names[:3])}) and the gene activity "
            f"({other.n_vars} genes, e.g. {list(other.var_names[:3])}) share no gene; use the same "
            "gene naming (symbols vs Ensembl ids) and species, or recompute gene activity with the "
            "matching annotation."
        )
    if len(shared) < 50:
        logger.warning("only %d genes are shared between RNA and gene activity", len(shared))
    Xr = _columns(X_rna, rna.var_names.get_indexer(shared))
    Xo = _columns(X_other, other.var_names.get_indexer(shared))
    hvg = highly_variable(Xr, n_top, integer=True, seed=seed) | highly_variable(
        Xo, n_top, integer=is_integer_matrix(Xo), seed=seed
    )
    genes = list(shared[hvg])
    rna_data = _fit_modality(_columns(Xr, np.flatnonzero(hvg)), genes, "lognorm", n_pcs, seed)
    other_data = _fit_modality(_columns(Xo, np.flatnonzero(hvg)), genes, "lognorm", n_pcs, seed)
    pairs = np.column_stack([np.arange(len(genes)), np.arange(len(genes))])
    report = {"n_shared_genes": len(shared), "n_hvg_union": len(genes)}
    logger.info("RNA + gene activity: %d shared genes, %d in the HVG union", len(shared), len(genes))
    return UnpairedData("atac", other_data, rna_data, pairs, report)


def _prepare_protein(rna, other, X_rna, X_other, n_top, n_pcs, protein_map, seed) -> UnpairedData:
    from ...pp.protein import protein_to_gene

    mapping = protein_to_gene(list(other.var_names), table=protein_map)
    mapping = mapping[mapping.isin(rna.var_names)]
    if mapping.empty:
        raise CellBridgeInputError(
            "No protein maps to a gene present in `rna`; pass `protein_map` (columns protein, gene) "
            "with gene names as in `rna.var_names`."
        )
    Xr = sp.csr_matrix(X_rna)
    hvg = highly_variable(Xr, n_top, integer=True, seed=seed)
    genes = list(rna.var_names[hvg].union(pd.Index(mapping.unique()), sort=False))
    rna_data = _fit_modality(Xr[:, rna.var_names.get_indexer(genes)], genes, "lognorm", n_pcs, seed)
    proteins = list(other.var_names)
    other_data = _fit_modality(sp.csr_matrix(X_other), proteins, "clr", n_pcs, seed)
    position = {g: i for i, g in enumerate(genes)}
    pairs = np.array([(proteins.index(p), position[g]) for p, g in mapping.items()], dtype=np.int64)
    report = {"n_proteins": len(proteins), "n_mapped_proteins": len(pairs), "n_rna_features": len(genes)}
    logger.info("RNA + protein: %d of %d proteins mapped to RNA genes", len(pairs), len(proteins))
    return UnpairedData("protein", other_data, rna_data, pairs, report)


def _columns(X, idx: np.ndarray) -> sp.csr_matrix:
    """Columns ``idx`` as float32 CSR (the input's own arrays when every column is kept in order)."""
    return sp.csr_matrix(take(X, cols=idx)).astype(np.float32, copy=False)


def _fit_modality(X_counts, features: list[str], kind: str, n_pcs: int, seed: int) -> ModalityData:
    transform = ExpressionTransform(kind, features)
    normalized = transform.fit(X_counts, n_pcs, seed)
    counts = sp.csr_matrix(X_counts).astype(np.float32, copy=False)
    return ModalityData(transform, normalized, counts, transform.pca_normalized(normalized))


# --- what training needs beyond the prepared matrices ----------------------------------------------


def cell_pairs(data: UnpairedData, params: BiCLUMParams, seed: int) -> np.ndarray:
    """MNN pairs ``(rna cell, other cell)`` on the scaled shared features (reference) or on their
    joint PCA (``mnn_rep="pca"``), optionally smoothed first over each modality's own kNN graph
    (``mnn_smooth`` neighbours in the cell-encoder PCA, ``mnn_smooth_weight`` kept of the cell itself).

    With ``pair_refine`` > 0 the pairs are refined that many times: a CCA between the paired cells'
    cell-encoder PCAs (``cca_dims`` components) puts every cell of both modalities in one space that
    uses all features, not only the linked ones, and MNN pairs are searched again there; ``cca_reg``
    is the CCA's ridge, as a fraction of each side's mean variance.
    """
    if params.mnn_rep == "pca":
        a, b = data.shared_pca(params.mnn_dims, seed=seed)
    else:
        a, b = data.shared_views()
    search = dict(k=params.k_mnn, ann=params.mnn_ann, seed=seed, ef=params.hnsw_ef, nprobe=params.ivf_nprobe)
    own = [data.other.pca, data.rna.pca]
    neighbours = [knn(x, x, params.mnn_smooth, ann=params.mnn_ann, seed=seed) for x in own] \
        if params.mnn_smooth > 0 else None

    def smooth(x: np.ndarray, m: int) -> np.ndarray:
        return x if neighbours is None else smooth_over_neighbors(x, neighbours[m], params.mnn_smooth_weight)

    pairs = mnn_pairs(smooth(a, 0), smooth(b, 1), **search)
    for _ in range(params.pair_refine):  # CCA of the paired cells' full PCAs, then MNN in its space
        if len(pairs) <= params.cca_dims:
            break
        (wa, ma), (wb, mb), _ = cca(own[0][pairs[:, 0]], own[1][pairs[:, 1]], params.cca_dims, reg=params.cca_reg)
        pairs = mnn_pairs(smooth(((own[0] - ma) @ wa).astype(np.float32), 0),
                          smooth(((own[1] - mb) @ wb).astype(np.float32), 1), **search)
    return np.ascontiguousarray(pairs[:, ::-1])


def feature_profiles(data: UnpairedData, params: BiCLUMParams, seed: int) -> list[np.ndarray]:
    """Feature-encoder inputs per modality (other, rna): each feature's values (``params.target``)
    across all cells, a seeded subsample of cells, or ``n_profile`` metacells (features x width)."""
    rng = np.random.default_rng(seed)
    out = []
    for modality in (data.other, data.rna):
        n_profile = params.n_profile or modality.n_cells
        if params.profile == "cells" or n_profile >= modality.n_cells:
            summary = modality.values(params.target)
        elif params.profile == "subsample":
            summary = modality.values(params.target, np.sort(rng.choice(modality.n_cells, n_profile, replace=False)))
        else:
            summary = _metacells(modality, params.target, n_profile, seed)
        summary = summary.toarray() if sp.issparse(summary) else np.asarray(summary)
        out.append(np.ascontiguousarray(summary.T, dtype=np.float32))
    return out


def _metacells(data, target: str, n: int, seed: int) -> np.ndarray:
    """Mean raw or scaled values over ``n`` k-means groups of cells in PCA space (sparse products)."""
    from sklearn.cluster import MiniBatchKMeans

    labels = MiniBatchKMeans(n_clusters=n, random_state=seed, n_init=1, batch_size=4096).fit_predict(data.pca)
    onehot = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(n, len(labels)))
    average = sp.diags(1 / np.maximum(np.asarray(onehot.sum(1)).ravel(), 1)) @ onehot
    if target == "counts":
        return (average @ data.counts).toarray()
    means = average @ data.normalized
    means = means.toarray() if sp.issparse(means) else np.asarray(means)
    return (means - data.transform.mean) / data.transform.std  # mean of z-scores = z-score of means


class PartnerSampler:
    """Draws, for each anchor cell, one of its MNN partners uniformly at random.

    Anchors are all cells of both modalities (other first, then RNA). An anchor without partner
    draws a random cell of the other modality and is flagged so it is left out of the cell loss.
    Vectorised: one call draws all anchors' partners for an epoch.
    """

    def __init__(self, pairs: np.ndarray, n_other: int, n_rna: int):
        self.n_other, self.n_rna = n_other, n_rna
        self._other_to_rna = _csr_lists(pairs[:, 0], pairs[:, 1], n_other)
        self._rna_to_other = _csr_lists(pairs[:, 1], pairs[:, 0], n_rna)

    def __len__(self) -> int:
        return self.n_other + self.n_rna

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(other_index, rna_index, has_partner)`` for every anchor."""
        rna_for_other, flag_o = _draw(self._other_to_rna, self.n_rna, rng)
        other_for_rna, flag_r = _draw(self._rna_to_other, self.n_other, rng)
        other_idx = np.concatenate([np.arange(self.n_other), other_for_rna])
        rna_idx = np.concatenate([rna_for_other, np.arange(self.n_rna)])
        return other_idx, rna_idx, np.concatenate([flag_o, flag_r])


def _csr_lists(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(src, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, src + 1, 1)
    return np.cumsum(indptr), dst[order]


def _draw(lists: tuple[np.ndarray, np.ndarray], n_targets: int, rng: np.random.Generator):
    indptr, targets = lists
    degree = np.diff(indptr)
    has = degree > 0
    pick = rng.integers(0, n_targets, size=degree.size)
    offset = (rng.random(degree.size) * np.maximum(degree, 1)).astype(np.int64)
    pick[has] = targets[indptr[:-1][has] + offset[has]]
    return pick, has
