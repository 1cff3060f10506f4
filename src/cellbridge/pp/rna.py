"""Expression preprocessing shared by the models: normalisation, HVGs, scaling, PCA.

These work on matrices (dense or sparse) and return fitted transforms, so a trained model can
apply exactly the same steps to new cells (query mapping).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import PCA

from .._validate import row_blocks

MAX_FIT_CELLS = 50_000  # cells used to fit a PCA
MAX_HVG_CELLS = 100_000  # cells used to rank highly variable features


def library_normalize_log(X, target_sum: float) -> sp.csr_matrix:
    """``log1p(X / total_per_cell * target_sum)`` as CSR float32 (empty cells stay 0)."""
    X = sp.csr_matrix(X).astype(np.float32, copy=False)
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    X = sp.diags(scale.astype(np.float32)) @ X
    X.data = np.log1p(X.data)
    return X.tocsr()


def clr_normalize(X) -> np.ndarray:
    """Seurat's centred log-ratio across the features of each cell: log1p(x / geometric-mean)."""
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    geo = np.exp(np.log1p(X).mean(axis=1, keepdims=True))
    return np.log1p(X / geo).astype(np.float32)


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


ARRAYS = ("mean", "std", "components", "center")


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


def subsample_rows(n: int, max_rows: int, seed: int) -> np.ndarray | None:
    """Sorted seeded sample of ``max_rows`` row indices, or None when ``n`` fits."""
    if n <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


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
