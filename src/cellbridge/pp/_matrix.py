"""Matrix operations of preprocessing, one implementation each: library-size normalisation and
log, CLR, highly variable features, column statistics, z-scores, TF-IDF + LSI, row/column takes.

They work on dense or sparse matrices (never on AnnData) and are shared by ``pp`` and the models.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD

from .._utils import subsample_rows
from .._validate import row_blocks

MAX_HVG_CELLS = 100_000  # cells used to rank highly variable features


def library_normalize_log(X, target_sum: float) -> sp.csr_matrix:
    """``log1p(X / total_per_cell * target_sum)`` as CSR float32 (empty cells stay 0)."""
    X = sp.csr_matrix(X).astype(np.float32, copy=False)
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    X = sp.diags(scale.astype(np.float32)) @ X
    X.data = np.log1p(X.data)
    return X.tocsr()


def clr_matrix(X, axis: int = 1):
    """CLR along ``axis`` (1: per cell across features, 0: per feature across cells)."""
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
    if sp.issparse(X):
        fmt = X.format
        logs = X.astype(np.float64, copy=True)
        logs.data = np.log1p(logs.data)
        geo = np.exp(np.asarray(logs.sum(axis=axis)).ravel() / X.shape[axis])
        scale = sp.diags(1.0 / geo)
        out = (scale @ X if axis == 1 else X @ scale).astype(np.float64)
        out = out.asformat(fmt)
        out.data = np.log1p(out.data)
        return out.astype(dtype)
    X = np.asarray(X, dtype=np.float64)
    geo = np.exp(np.log1p(X).mean(axis=axis, keepdims=True))
    return np.log1p(X / geo).astype(dtype)


def clr_normalize(X) -> np.ndarray:
    """Seurat's centred log-ratio across the features of each cell, dense float32 (computed in float64)."""
    return clr_matrix(np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64), 1).astype(np.float32)


def median_total(X) -> float:
    """Median library size of the non-empty cells (scanpy's default ``normalize_total`` target)."""
    totals = np.asarray(X.sum(axis=1)).ravel()
    return float(np.median(totals[totals > 0])) if np.any(totals > 0) else 1.0


def highly_variable(X_counts, n_top: int, *, integer: bool, seed: int = 0) -> np.ndarray:
    """Boolean mask of the ``n_top`` most variable features.

    ``seurat_v3`` on counts when ``integer``; otherwise the ``seurat`` flavour on
    log-normalised values (gene activity scores that are not counts). All features when
    ``n_top`` is at least their number. Above ``MAX_HVG_CELLS`` cells, a seeded subsample of
    that many cells is used.
    """
    n = X_counts.shape[1]
    if n_top >= n:
        return np.ones(n, dtype=bool)
    rows = subsample_rows(X_counts.shape[0], MAX_HVG_CELLS, seed)
    if rows is not None:  # rankings are stable on 10^5 cells; copies of all cells are not needed
        X_counts = X_counts[rows]
    if integer:  # seurat_v3 reads the counts without changing them: no copy
        tmp = ad.AnnData(sp.csr_matrix(X_counts).astype(np.float32, copy=False))
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat_v3")
    else:
        tmp = ad.AnnData(library_normalize_log(X_counts, median_total(X_counts)))  # a new matrix
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
    return tmp.var["highly_variable"].to_numpy()


def column_mean_std(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (ddof=1; 1 where zero) of a dense or sparse matrix,
    accumulated over blocks of rows so no full-size temporary is made."""
    n = X.shape[0]
    total = np.zeros(X.shape[1])
    total_sq = np.zeros(X.shape[1])
    for block in row_blocks(X):
        sq = block.multiply(block) if sp.issparse(block) else np.square(block, dtype=np.float64)
        total += np.asarray(block.sum(axis=0, dtype=np.float64)).ravel()
        total_sq += np.asarray(sq.sum(axis=0, dtype=np.float64)).ravel()
    mean = total / max(n, 1)
    var = (total_sq - n * mean**2) / max(n - 1, 1)
    std = np.sqrt(np.maximum(var, 0))
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def as_csr32(X) -> sp.csr_matrix:
    return sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32, copy=False)


def zscore(X, clip: float | None) -> np.ndarray:
    """Per-feature z-scores (dense float32; constant features become 0)."""
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = X.astype(np.float32, copy=True)
    X -= X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    X /= sd
    if clip is not None:
        np.clip(X, -clip, clip, out=X)
    return X


def sparse_mean_std(X: sp.csr_matrix, chunk: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (ddof 0, as :func:`zscore`) without densifying.

    Two passes in float64 over the stored values, ``chunk`` at a time (zeros enter as
    ``n_zero * mean**2``), so there is no cancellation and no temporary of the matrix's size;
    constant columns get standard deviation 1.
    """
    X = sp.csr_matrix(X)
    n, d = X.shape
    parts = [slice(i, i + chunk) for i in range(0, X.nnz, chunk)]
    stored = sum((np.bincount(X.indices[p], minlength=d) for p in parts), np.zeros(d, dtype=np.int64))
    total = sum((np.bincount(X.indices[p], weights=X.data[p], minlength=d) for p in parts), np.zeros(d))
    mean = total / n
    sq = np.zeros(d)
    for p in parts:
        dev = X.data[p].astype(np.float64) - mean[X.indices[p]]
        sq += np.bincount(X.indices[p], weights=dev * dev, minlength=d)
    std = np.sqrt((sq + (n - stored) * mean**2) / n)
    std = np.where(std > 1e-12 * (1.0 + np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def scale_rows(X, rows, mean: np.ndarray, std: np.ndarray, clip: float | None) -> np.ndarray:
    """Dense float32 z-scores ``(X[rows] - mean) / std`` (clipped to ``[-clip, clip]``)."""
    block = X[rows]
    block = block.toarray() if sp.issparse(block) else np.array(block, dtype=np.float32)
    block = block.astype(np.float32, copy=False)
    block -= mean
    block /= std
    if clip is not None:
        np.clip(block, -clip, clip, out=block)
    return block


def tfidf_lsi(counts: sp.csr_matrix, n_components: int = 50, *, seed: int = 0) -> np.ndarray:
    """TF-IDF (Signac-style log-TF-IDF) then truncated SVD; the first (depth) component is dropped.

    Returns ``n_components`` columns (``n_components + 1`` are computed).
    """
    X = as_csr32(counts).copy()
    X.data = (X.data > 0).astype(np.float32)
    tf = sp.diags(1.0 / np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1)) @ X
    idf = X.shape[0] / np.maximum(np.asarray(X.sum(axis=0)).ravel(), 1)
    tfidf = (tf @ sp.diags(idf.astype(np.float32))).tocsr()
    tfidf.data = np.log1p(tfidf.data * 1e4)
    k = min(n_components + 1, min(X.shape) - 1)
    svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=seed)
    return svd.fit_transform(tfidf)[:, 1:].astype(np.float32)


def cca(a: np.ndarray, b: np.ndarray, n_components: int, *, reg: float = 0.01
        ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Regularised canonical correlation analysis of paired rows ``a[i]`` <-> ``b[i]``.

    Closed form: each side is whitened with ``(cov + reg * mean variance * I)^(-1/2)`` and the
    cross-covariance of the whitened sides is decomposed by SVD.

    Returns
    -------
    ``((W_a, mean_a), (W_b, mean_b), correlations)``: ``(x - mean_a) @ W_a`` projects rows of the
    ``a`` space (any rows, not only the paired ones) on the first ``n_components`` canonical
    directions, likewise for ``b``.
    """
    def inv_sqrt(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(c + reg * np.trace(c) / len(c) * np.eye(len(c)))
        return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    a0, b0 = a - mean_a, b - mean_b
    wa, wb = inv_sqrt(a0.T @ a0 / len(a)), inv_sqrt(b0.T @ b0 / len(b))
    u, s, vt = np.linalg.svd(wa @ (a0.T @ b0 / len(a)) @ wb)
    d = min(n_components, len(s))
    return (wa @ u[:, :d], mean_a), (wb @ vt.T[:, :d], mean_b), s[:d]


def take(X, rows=None, cols=None):
    """``X[rows][:, cols]`` (index arrays or boolean masks; None keeps all), without a copy when a
    selection keeps every row or column in order."""
    if rows is not None and not _keeps_all(rows, X.shape[0]):
        X = X[rows]
    if cols is not None and not _keeps_all(cols, X.shape[1]):
        X = X[:, cols]
    return X


def _keeps_all(idx, n: int) -> bool:
    idx = np.asarray(idx)
    if idx.dtype == bool:
        return idx.size == n and bool(idx.all())
    return idx.size == n and np.array_equal(idx, np.arange(n))
