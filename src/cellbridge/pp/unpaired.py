"""Preparation of two unpaired modalities for BiCLUM (METHODS §1.2-1.3)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import CellBridgeInputError
from .._validate import check_modality, is_integer_matrix
from .rna import MAX_FIT_CELLS, ExpressionTransform, highly_variable, subsample_rows, take

logger = logging.getLogger("cellbridge")

MODALITIES = ("atac", "protein")


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
        from sklearn.decomposition import PCA

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
    from .protein import protein_to_gene

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
