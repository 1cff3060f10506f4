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


def library_normalize_log(X, target_sum: float) -> sp.csr_matrix:
    """``log1p(X / total_per_cell * target_sum)`` as CSR float32 (empty cells stay 0)."""
    X = sp.csr_matrix(X, dtype=np.float32)
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


def highly_variable(X_counts, n_top: int, *, integer: bool, seed: int = 0) -> np.ndarray:
    """Boolean mask of the ``n_top`` most variable features.

    ``seurat_v3`` on counts when ``integer``; otherwise the ``seurat`` flavour on
    log-normalised values (gene activity scores that are not counts). All features when
    ``n_top`` is at least their number.
    """
    n = X_counts.shape[1]
    if n_top >= n:
        return np.ones(n, dtype=bool)
    tmp = ad.AnnData(sp.csr_matrix(X_counts, dtype=np.float32))
    if integer:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat_v3")
    else:
        sc.pp.normalize_total(tmp)
        sc.pp.log1p(tmp)
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
    return tmp.var["highly_variable"].to_numpy()


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

    def normalize(self, X) -> np.ndarray | sp.csr_matrix:
        if self.kind == "clr":
            return clr_normalize(X)
        return library_normalize_log(X, self.target_sum)

    def fit(self, X_counts, n_pcs: int, seed: int = 0) -> np.ndarray:
        """Fit on training counts (cells x ``features``); return the scaled dense matrix."""
        if self.kind == "lognorm":
            totals = np.asarray(X_counts.sum(axis=1)).ravel()
            self.target_sum = float(np.median(totals[totals > 0])) if np.any(totals > 0) else 1.0
        Xn = self.normalize(X_counts)
        Xn = Xn.toarray() if sp.issparse(Xn) else Xn
        self.mean = Xn.mean(axis=0).astype(np.float32)
        std = Xn.std(axis=0, ddof=1).astype(np.float32) if len(Xn) > 1 else np.ones(Xn.shape[1], np.float32)
        self.std = np.where(std > 0, std, 1.0).astype(np.float32)
        scaled = (Xn - self.mean) / self.std
        n_comp = max(1, min(n_pcs, scaled.shape[0] - 1, scaled.shape[1] - 1 if scaled.shape[1] > 1 else 1))
        pca = PCA(n_components=n_comp, random_state=seed, svd_solver="full" if scaled.shape[1] <= 500 else "auto")
        pca.fit(scaled)
        self.components = pca.components_.astype(np.float32)
        return scaled.astype(np.float32)

    def scale(self, X_counts) -> np.ndarray:
        Xn = self.normalize(X_counts)
        Xn = Xn.toarray() if sp.issparse(Xn) else Xn
        return ((Xn - self.mean) / self.std).astype(np.float32)

    def pca(self, scaled: np.ndarray) -> np.ndarray:
        """Project scaled values (training means were removed by scaling) onto the PCs."""
        return (scaled @ self.components.T).astype(np.float32)

    def to_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able metadata and the fitted arrays (saved as tensors, not in JSON)."""
        meta = {"kind": self.kind, "features": list(self.features), "target_sum": self.target_sum}
        return meta, {"mean": self.mean, "std": self.std, "components": self.components}

    @classmethod
    def from_dict(cls, meta: dict, arrays: dict[str, np.ndarray]) -> ExpressionTransform:
        return cls(meta["kind"], list(meta["features"]), meta["target_sum"],
                   *(np.asarray(arrays[k], np.float32) for k in ("mean", "std", "components")))
