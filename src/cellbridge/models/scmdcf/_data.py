"""scMDCF's input preparation (METHODS §2.1) and its training / embedding batches.

Preparation: cells aligned by name and filtered jointly (defect E6), zero-count features
removed, library-size normalisation to the median, ``log1p``, highly variable features
(``seurat`` flavour) and z-score scaling; ATAC peaks may instead be fed as TF-IDF + LSI, and
either modality as principal components.

Batches: small data is held as dense z-scored tensors (the reference's full-batch mode,
unchanged). Above the full-batch threshold :func:`prepare_paired` keeps the log-normalised
matrices sparse with per-feature mean/std, and dense z-scores are made per batch of rows, so
memory grows with the number of stored values rather than cells x features. All arrays are held
as torch tensors: handed to ``torch.multiprocessing`` workers (data-parallel training) they are
placed in shared memory instead of being copied into every process.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
import torch

from ..._errors import CellBridgeInputError, CellBridgeWarning
from ..._utils import sample_or_all, subsample_rows
from ..._validate import check_modality
from ...pp._matrix import (
    MAX_HVG_CELLS,
    as_csr32,
    library_normalize_log,
    median_total,
    scale_rows,
    sparse_mean_std,
    take,
    tfidf_lsi,
    zscore,
)
from ...pp.paired import Modality, align_cells, infer_modality, split_mudata

logger = logging.getLogger("cellbridge")

def _select_hvf(logX: sp.csr_matrix, var: pd.DataFrame, n_top: int | None) -> np.ndarray:
    """Boolean mask of highly variable features (``seurat`` flavour cut-offs, then top ``n_top``).

    Features passing min_mean 0.0125, max_mean 3 and min_disp 0.5 rank first (by normalised
    dispersion), the others after them, so exactly ``min(n_top, n_features)`` are kept.
    """
    n = logX.shape[1]
    if n_top is None or n_top >= n:
        return np.ones(n, dtype=bool)
    rows = subsample_rows(logX.shape[0], MAX_HVG_CELLS, 0)  # scanpy copies its input: rank on <= 1e5 cells
    tmp = ad.AnnData(logX if rows is None else logX[rows], var=pd.DataFrame(index=var.index.astype(str)))
    tmp.var_names_make_unique()
    stats = sc.pp.highly_variable_genes(
        tmp, flavor="seurat", min_mean=0.0125, max_mean=3, min_disp=0.5, inplace=False
    )
    disp = np.nan_to_num(stats["dispersions_norm"].to_numpy(dtype=float), nan=-np.inf)
    passing = stats["highly_variable"].to_numpy(dtype=bool)
    order = np.lexsort((-disp, ~passing))  # passing first, then by dispersion
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_top]] = True
    return mask


def _default_n_top(modality: str, n_top_rna, n_top_other) -> tuple[int, int | None]:
    if n_top_rna is None:
        n_top_rna = 2500 if modality == "atac" else 1000
    if n_top_other is None:
        n_top_other = 2500 if modality == "atac" else None
    return n_top_rna, n_top_other


def _finish(counts, logX, mask, var: pd.DataFrame, obs: pd.DataFrame, clip, key: str,
            lazy: bool = False) -> ad.AnnData:
    var = var.iloc[np.flatnonzero(mask)].copy()
    keep_all = bool(mask.all())  # no column copy of large matrices for an identity selection
    if lazy:
        out = _lazy_scaled((logX if keep_all else logX[:, mask]).tocsr(), obs, var, clip)
    else:
        out = ad.AnnData(zscore(logX[:, mask], clip), obs=obs.copy(), var=var)
    out.layers["counts"] = counts if keep_all else counts[:, mask].copy()
    out.uns["cellbridge_prepare"] = {"representation": key, "scaled": "per_batch" if lazy else "dense"}
    return out


# --- z-scores computed per batch of rows (large data) ----------------------------------------


def is_scaled_per_batch(prepared: ad.AnnData) -> bool:
    """True when ``prepared.X`` holds sparse log-normalised values to be z-scored per batch."""
    return prepared.uns.get("cellbridge_prepare", {}).get("scaled") == "per_batch"


def _lazy_scaled(logX: sp.csr_matrix, obs, var: pd.DataFrame, clip) -> ad.AnnData:
    """AnnData with sparse ``X`` = log-normalised values; ``var`` gets ``scale_mean``/``scale_std``."""
    mean, std = sparse_mean_std(logX)
    var["scale_mean"], var["scale_std"] = mean, std
    out = ad.AnnData(logX.astype(np.float32, copy=False), obs=obs.copy(), var=var)
    out.uns["cellbridge_scale"] = {"clip": clip}
    return out


def scaling_of(prepared: ad.AnnData) -> tuple[np.ndarray, np.ndarray, float | None]:
    """``(mean, std, clip)`` of a per-batch-scaled prepared AnnData."""
    return (prepared.var["scale_mean"].to_numpy(np.float32), prepared.var["scale_std"].to_numpy(np.float32),
            prepared.uns["cellbridge_scale"]["clip"])


def prepare_paired(
    rna,
    other: ad.AnnData | None = None,
    *,
    modality: Modality | None = None,
    n_top_rna: int | None = None,
    n_top_other: int | None = None,
    layer_rna: str | None = None,
    layer_other: str | None = None,
    min_cells_shared: int = 10,
    atac_representation: Literal["hvf", "lsi", "pca"] = "hvf",
    n_lsi: int = 50,
    rna_representation: Literal["hvf", "pca"] = "hvf",
    n_pcs: int = 50,
    clip: float | None = None,
    seed: int = 0,
    sparse_above: int | None = None,
) -> tuple[ad.AnnData, ad.AnnData]:
    """Align, filter, normalise and scale a paired RNA + ATAC/ADT dataset (METHODS §2.1).

    Parameters
    ----------
    rna
        RNA counts (cells x genes), or a MuData with modalities ``"rna"`` and one of
        ``"atac"``/``"adt"``/``"prot"``/``"protein"`` (then ``other`` must be None).
    other
        ATAC peak counts or ADT counts of the same cells (matched by ``obs_names``, any order).
    modality
        ``"atac"`` or ``"protein"``; inferred from feature names / panel size when None.
    n_top_rna, n_top_other
        Highly variable features kept; default 2500 + 2500 for RNA+ATAC, 1000 + all proteins.
    layer_rna, layer_other
        Layers holding raw counts (``None`` reads ``.X``).
    min_cells_shared
        Fewest shared cells accepted.
    atac_representation
        ``"hvf"`` (reference: HVF peaks, z-scored) or ``"lsi"`` (TF-IDF + LSI on all peaks,
        first component dropped, z-scored; ``n_lsi`` components) or ``"pca"`` (the first
        ``n_pcs`` principal components of the z-scored HVF peaks, scaled as for RNA).
    rna_representation
        ``"hvf"`` (reference: z-scored highly variable genes) or ``"pca"`` (the first ``n_pcs``
        principal components of those, divided by the standard deviation of the first).
    clip
        Clip z-scores to ``[-clip, clip]`` (None: no clipping, as the reference).
    seed
        Seed of the randomized SVD (LSI only).
    sparse_above
        When more cells than this are kept, HVF matrices are not densified: ``X`` holds the
        sparse log-normalised values (CSR float32), ``var["scale_mean"]``/``var["scale_std"]``
        the z-score parameters and ``uns["cellbridge_scale"]["clip"]`` the clip, and z-scores
        are made per batch of rows with :func:`scale_rows` (see :func:`is_scaled_per_batch`).
        None (default) always returns dense z-scores.

    Returns
    -------
    ``(rna_prepared, other_prepared)``: new AnnData objects with the same cells in the same order;
    ``X`` holds z-scores (dense float32), ``layers["counts"]`` the selected raw counts and
    ``uns["cellbridge_prepare"]`` the settings. The inputs are never modified.
    """
    rna, other, hint = split_mudata(rna, other)
    X1 = check_modality(rna, "rna", layer=layer_rna, counts=True)
    X2 = check_modality(other, "other", layer=layer_other, counts=True)
    modality = modality or hint or infer_modality(other)
    if modality not in ("atac", "protein"):
        raise CellBridgeInputError(f'`modality` must be "atac" or "protein", got {modality!r}.')
    i1, i2 = align_cells(rna, other, min_cells_shared=min_cells_shared)
    c1, c2 = take(as_csr32(X1), i1), take(as_csr32(X2), i2)  # no copies when already aligned
    keep = (np.asarray(c1.sum(axis=1)).ravel() > 0) & (np.asarray(c2.sum(axis=1)).ravel() > 0)
    if not keep.all():
        warnings.warn(
            f"{int((~keep).sum())} cells have no counts in RNA or in {modality} and were dropped "
            "from both modalities.",
            CellBridgeWarning,
            stacklevel=2,
        )
    if keep.sum() < min_cells_shared:
        raise CellBridgeInputError(
            f"Only {int(keep.sum())} cells have counts in both modalities; need {min_cells_shared}."
        )
    obs = rna.obs.iloc[i1[keep]].copy()
    lazy = sparse_above is not None and int(keep.sum()) > sparse_above
    n_top_rna, n_top_other = _default_n_top(modality, n_top_rna, n_top_other)
    rna_out = _prepare_one(take(c1, keep), rna, obs, n_top_rna, clip, "hvf", lazy)
    if rna_representation == "pca":
        rna_out = _to_pca(rna_out, n_pcs, seed)
    elif rna_representation != "hvf":
        raise CellBridgeInputError(f'`rna_representation` must be "hvf" or "pca", got {rna_representation!r}.')
    if modality == "atac" and atac_representation == "lsi":
        other_out = _prepare_lsi(take(c2, keep), obs, n_lsi, clip, seed)
    elif atac_representation not in ("hvf", "lsi", "pca"):
        raise CellBridgeInputError(
            f'`atac_representation` must be "hvf", "lsi" or "pca", got {atac_representation!r}.')
    else:
        other_out = _prepare_one(take(c2, keep), other, obs, n_top_other, clip, "hvf", lazy)
        if modality == "atac" and atac_representation == "pca":
            other_out = _to_pca(other_out, n_pcs, seed)
    for out in (rna_out, other_out):
        out.uns["cellbridge_prepare"].update(modality=modality, n_cells_input=int(rna.n_obs))
    logger.info("prepare_paired: %d cells, %d RNA and %d %s features", obs.shape[0],
                rna_out.n_vars, other_out.n_vars, modality)
    return rna_out, other_out


def _prepare_one(counts, src: ad.AnnData, obs, n_top, clip, key: str, lazy: bool = False) -> ad.AnnData:
    nonzero = np.asarray(counts.sum(axis=0)).ravel() > 0
    counts = take(counts, cols=nonzero)
    src_var = src.var.iloc[np.flatnonzero(nonzero)]
    logX = library_normalize_log(counts, median_total(counts))
    mask = _select_hvf(logX, src_var, n_top)
    return _finish(counts, logX, mask, src_var, obs, clip, key, lazy)


def _to_pca(prepared: ad.AnnData, n_pcs: int, seed: int) -> ad.AnnData:
    """Replace the z-scored genes by their leading principal components (scaled by PC1's sd)."""
    from sklearn.decomposition import PCA

    n = max(1, min(n_pcs, prepared.n_vars - 1, prepared.n_obs - 1))
    if is_scaled_per_batch(prepared):
        pcs = _pca_per_batch(prepared, n, seed)
    else:
        pcs = PCA(n_components=n, random_state=seed).fit_transform(prepared.X)
    pcs = (pcs / max(pcs[:, 0].std(), 1e-12)).astype(np.float32)
    out = ad.AnnData(pcs, obs=prepared.obs.copy(), var=pd.DataFrame(index=[f"PC{i + 1}" for i in range(n)]))
    out.uns["cellbridge_prepare"] = {"representation": "pca"}
    return out


def _pca_per_batch(prepared: ad.AnnData, n: int, seed: int, max_fit: int = 50_000,
                   chunk: int = 20_000) -> np.ndarray:
    """PCA of per-batch-scaled data: fitted on a seeded sample of ``max_fit`` cells (dense
    z-scores), every cell projected chunk by chunk."""
    from sklearn.decomposition import PCA

    mean, std, clip = scaling_of(prepared)
    n_obs = prepared.n_obs
    fit_rows = sample_or_all(n_obs, max_fit, seed)
    pca = PCA(n_components=n, random_state=seed).fit(scale_rows(prepared.X, fit_rows, mean, std, clip))
    return np.vstack([pca.transform(scale_rows(prepared.X, slice(i, i + chunk), mean, std, clip))
                      for i in range(0, n_obs, chunk)])


def _prepare_lsi(counts, obs, n_lsi: int, clip, seed: int) -> ad.AnnData:
    counts = counts[:, np.asarray(counts.sum(axis=0)).ravel() > 0]
    lsi = tfidf_lsi(counts, n_lsi, seed=seed)
    var = pd.DataFrame(index=[f"LSI{i + 2}" for i in range(lsi.shape[1])])
    out = ad.AnnData(zscore(lsi, clip), obs=obs.copy(), var=var)
    out.uns["cellbridge_prepare"] = {"representation": "lsi"}
    return out


def _unit_pcs(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Leading principal components of ``x`` scaled to total variance 1."""
    from sklearn.decomposition import PCA

    n = max(1, min(n, x.shape[1], x.shape[0] - 1))
    pcs = PCA(n_components=n, random_state=seed).fit_transform(np.asarray(x, dtype=np.float64))
    return pcs / max(np.sqrt(pcs.var(axis=0).sum()), 1e-12)


def modality_agreement_weights(x_rna: np.ndarray, x_other: np.ndarray, n_clusters: int | None = None,
                               *, n_pcs: int = 20, max_cells: int = 20000,
                               seed: int = 0) -> tuple[float, float]:
    """Label-free informativeness weight of each modality, in (0, 1], the larger being 1.

    Each modality's leading PCs are scaled to total variance 1 and concatenated; KMeans (K =
    ``n_clusters``, 10 when None) is run on each modality and on the concatenation. A modality's
    score is the NMI between its own clustering and the joint one: a modality with cell-type
    structure shapes the joint clustering, one that is mostly noise does not. Weights are the
    scores divided by the larger score. Above ``max_cells`` cells a seeded sample is used; sparse
    inputs are densified on that sample.

    Returns
    -------
    ``(w_rna, w_other)``.
    """
    import scipy.sparse as sp
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score as nmi

    k = int(n_clusters or 10)
    n = x_rna.shape[0]
    rows = sample_or_all(n, max_cells, seed)
    dense = [x[rows].toarray() if sp.issparse(x) else np.asarray(x[rows]) for x in (x_rna, x_other)]
    reps = [_unit_pcs(x, n_pcs, seed) for x in dense]
    labels = [KMeans(k, n_init=5, random_state=seed).fit_predict(r)
              for r in (*reps, np.hstack(reps))]
    scores = np.array([max(nmi(labels[i], labels[2]), 1e-3) for i in (0, 1)])
    w = scores / scores.max()
    return float(w[0]), float(w[1])


# --- batches ---------------------------------------------------------------------------------

Rows = torch.Tensor | slice


class DenseRows:
    """A dense matrix of already-scaled values; ``rows(idx)`` indexes it (the full-batch path)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.x.shape)

    def rows(self, idx: Rows) -> torch.Tensor:
        return self.x[idx]

    def to(self, device: torch.device) -> DenseRows:
        return DenseRows(self.x.to(device))


class SparseRows:
    """Sparse log-normalised values; ``rows(idx)`` returns their dense z-scores on ``device``.

    Parameters
    ----------
    matrix
        CSR matrix (cells x features).
    mean, std, clip
        Per-feature z-score parameters and optional clip (:func:`cellbridge.pp._matrix.scale_rows`).
    device
        Where the batches are placed.
    """

    def __init__(self, matrix: sp.csr_matrix, mean: np.ndarray, std: np.ndarray, clip: float | None,
                 device: torch.device | str = "cpu"):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        self._parts = tuple(torch.from_numpy(np.ascontiguousarray(a))
                            for a in (matrix.data, matrix.indices, matrix.indptr))
        self._shape = matrix.shape
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.clip, self.device = clip, torch.device(device)
        self._csr: sp.csr_matrix | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _matrix(self) -> sp.csr_matrix:
        if self._csr is None:  # a view of the (possibly shared-memory) tensors, no copy
            data, indices, indptr = (t.numpy() for t in self._parts)
            self._csr = sp.csr_matrix((data, indices, indptr), shape=self._shape, copy=False)
        return self._csr

    def rows(self, idx: Rows) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        block = scale_rows(self._matrix(), idx, self.mean, self.std, self.clip)
        return torch.from_numpy(block).to(self.device)

    def to(self, device: torch.device) -> SparseRows:
        new = object.__new__(SparseRows)
        new.__dict__.update(self.__getstate__(), device=torch.device(device))
        return new

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_csr": None}


def modality_rows(prepared: ad.AnnData, device: torch.device) -> DenseRows | SparseRows:
    """Row source of one prepared modality (dense z-scores, or sparse values scaled per batch)."""
    if is_scaled_per_batch(prepared):
        mean, std, clip = scaling_of(prepared)
        return SparseRows(prepared.X, mean, std, clip, device)
    if sp.issparse(prepared.X):
        raise CellBridgeInputError("a prepared modality is sparse but carries no per-batch scaling; "
                                   "prepare it with cellbridge.models.scmdcf._data.prepare_paired.")
    return DenseRows(torch.as_tensor(prepared.X, dtype=torch.float32, device=device))


class PairedBatches:
    """Scaled rows of the two modalities of the same cells, as dense float32 tensors.

    Parameters
    ----------
    rna, other
        Row sources of the same number of cells (:class:`DenseRows` or :class:`SparseRows`).
    """

    def __init__(self, rna: DenseRows | SparseRows, other: DenseRows | SparseRows):
        if rna.shape[0] != other.shape[0]:
            raise CellBridgeInputError(f"paired modalities must have the same cells: {rna.shape[0]} RNA "
                                       f"rows vs {other.shape[0]} rows of the other modality.")
        self.rna, self.other = rna, other

    @classmethod
    def from_prepared(cls, rna: ad.AnnData, other: ad.AnnData, device: torch.device) -> PairedBatches:
        """From the output of :func:`prepare_paired`."""
        return cls(modality_rows(rna, device), modality_rows(other, device))

    @classmethod
    def from_tensors(cls, x_rna: torch.Tensor, x_other: torch.Tensor) -> PairedBatches:
        """From two dense tensors of scaled values (cells x features)."""
        return cls(DenseRows(x_rna), DenseRows(x_other))

    @property
    def n_obs(self) -> int:
        return self.rna.shape[0]

    @property
    def is_sparse(self) -> bool:
        return isinstance(self.rna, SparseRows) or isinstance(self.other, SparseRows)

    def rows(self, idx: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled ``(x_rna, x_other)`` of the cells ``idx`` (index tensor or slice)."""
        return self.rna.rows(idx), self.other.rows(idx)

    def to(self, device: torch.device) -> PairedBatches:
        return PairedBatches(self.rna.to(device), self.other.to(device))
