"""Preprocessing of paired multi-omics (RNA + ATAC peaks, or RNA + ADT) for scMDCF.

METHODS §2.1: cells aligned by name and filtered jointly (defect E6), zero-count features
removed, library-size normalisation to the median, ``log1p``, highly variable features
(``seurat`` flavour) and z-score scaling. ATAC peaks may instead be fed as TF-IDF + LSI.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD

from .._errors import CellBridgeInputError, CellBridgeWarning
from .._validate import check_modality
from .rna import MAX_HVG_CELLS, subsample_rows, take

logger = logging.getLogger("cellbridge")

Modality = Literal["atac", "protein"]
_PEAK_RE = re.compile(r"^(chr)?[0-9A-Za-z_.]+[:\-_]\d+[\-_]\d+$")
_OTHER_KEYS = {"atac": "atac", "peaks": "atac", "adt": "protein", "prot": "protein", "protein": "protein"}
MAX_PROTEINS = 500


def infer_modality(other: ad.AnnData) -> Modality:
    """Guess whether ``other`` holds ATAC peaks or proteins (ADT).

    Peaks are recognised by names such as ``chr1:100-200``, ``chr1-100-200`` or
    ``chr1_100_200``; otherwise a panel of at most 500 features is taken as proteins.
    """
    names = pd.Index(other.var_names[: min(other.n_vars, 2000)]).astype(str)
    if len(names) and np.mean([bool(_PEAK_RE.match(n)) for n in names]) > 0.5:
        return "atac"
    if other.n_vars <= MAX_PROTEINS:
        return "protein"
    raise CellBridgeInputError(
        f"Cannot tell whether `other` ({other.n_vars} features, e.g. {list(names[:3])}) holds ATAC "
        'peaks or proteins; pass `modality="atac"` or `modality="protein"`.'
    )


def split_mudata(mdata, other) -> tuple[ad.AnnData, ad.AnnData, str | None]:
    """Return ``(rna, other, modality_hint)`` from a MuData (or pass AnnData pairs through)."""
    if not hasattr(mdata, "mod"):
        if other is None:
            raise CellBridgeInputError(
                "`other` is missing: pass the ATAC/ADT AnnData as the second argument, or one "
                'MuData with modalities "rna" and "atac"/"adt".'
            )
        return mdata, other, None
    mods = dict(mdata.mod)
    if "rna" not in mods:
        raise CellBridgeInputError(f'The MuData has no "rna" modality (has {list(mods)}); rename it.')
    keys = [k for k in mods if k.lower() in _OTHER_KEYS]
    if other is not None or len(keys) != 1:
        raise CellBridgeInputError(
            f"The MuData must hold exactly one of {sorted(_OTHER_KEYS)} beside 'rna' (has "
            f"{list(mods)}), and `other` must then be None."
        )
    return mods["rna"], mods[keys[0]], _OTHER_KEYS[keys[0].lower()]


def align_cells(
    rna: ad.AnnData, other: ad.AnnData, *, min_cells_shared: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the shared cells in ``rna`` and ``other`` (in ``rna``'s order)."""
    shared = rna.obs_names[rna.obs_names.isin(other.obs_names)]
    if len(shared) < min_cells_shared:
        raise CellBridgeInputError(
            f"Only {len(shared)} cell names are shared by `rna` ({rna.n_obs} cells, e.g. "
            f"{list(rna.obs_names[:2])}) and `other` ({other.n_obs}, e.g. {list(other.obs_names[:2])}); "
            f"at least {min_cells_shared} are needed. Paired data must use the same obs_names in "
            "both modalities — strip suffixes such as '_rna'/'_atac' first."
        )
    n_drop = rna.n_obs + other.n_obs - 2 * len(shared)
    if n_drop:
        warnings.warn(
            f"{rna.n_obs - len(shared)} RNA and {other.n_obs - len(shared)} other cells have no "
            "partner and were dropped.",
            CellBridgeWarning,
            stacklevel=3,
        )
    return rna.obs_names.get_indexer(shared), other.obs_names.get_indexer(shared)


def _as_csr(X) -> sp.csr_matrix:
    return sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32, copy=False)


def _library_normalise(X: sp.csr_matrix) -> sp.csr_matrix:
    """Scale each cell to the median library size, then ``log1p`` (returns a new matrix)."""
    lib = np.asarray(X.sum(axis=1)).ravel()
    scale = np.median(lib) / lib
    out = sp.diags(scale.astype(np.float32)) @ X
    out.data = np.log1p(out.data)
    return out.tocsr()


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


def _zscore(X, clip: float | None) -> np.ndarray:
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


def tfidf_lsi(counts: sp.csr_matrix, n_components: int = 50, *, seed: int = 0) -> np.ndarray:
    """TF-IDF (Signac-style log-TF-IDF) then truncated SVD; the first (depth) component is dropped.

    Returns ``n_components`` columns (``n_components + 1`` are computed).
    """
    X = _as_csr(counts).copy()
    X.data = (X.data > 0).astype(np.float32)
    tf = sp.diags(1.0 / np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1)) @ X
    idf = X.shape[0] / np.maximum(np.asarray(X.sum(axis=0)).ravel(), 1)
    tfidf = (tf @ sp.diags(idf.astype(np.float32))).tocsr()
    tfidf.data = np.log1p(tfidf.data * 1e4)
    k = min(n_components + 1, min(X.shape) - 1)
    svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=seed)
    return svd.fit_transform(tfidf)[:, 1:].astype(np.float32)


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
        out = ad.AnnData(_zscore(logX[:, mask], clip), obs=obs.copy(), var=var)
    out.layers["counts"] = counts if keep_all else counts[:, mask].copy()
    out.uns["cellbridge_prepare"] = {"representation": key, "scaled": "per_batch" if lazy else "dense"}
    return out


# --- z-scores computed per batch of rows (large data) ----------------------------------------


def sparse_mean_std(X: sp.csr_matrix, chunk: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (ddof 0, as :func:`_zscore`) without densifying.

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
    c1, c2 = take(_as_csr(X1), i1), take(_as_csr(X2), i2)  # no copies when already aligned
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
    logX = _library_normalise(counts)
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
    fit_rows = np.arange(n_obs) if n_obs <= max_fit else np.sort(
        np.random.default_rng(seed).choice(n_obs, max_fit, replace=False))
    pca = PCA(n_components=n, random_state=seed).fit(scale_rows(prepared.X, fit_rows, mean, std, clip))
    return np.vstack([pca.transform(scale_rows(prepared.X, slice(i, i + chunk), mean, std, clip))
                      for i in range(0, n_obs, chunk)])


def _prepare_lsi(counts, obs, n_lsi: int, clip, seed: int) -> ad.AnnData:
    counts = counts[:, np.asarray(counts.sum(axis=0)).ravel() > 0]
    lsi = tfidf_lsi(counts, n_lsi, seed=seed)
    var = pd.DataFrame(index=[f"LSI{i + 2}" for i in range(lsi.shape[1])])
    out = ad.AnnData(_zscore(lsi, clip), obs=obs.copy(), var=var)
    out.uns["cellbridge_prepare"] = {"representation": "lsi"}
    return out
