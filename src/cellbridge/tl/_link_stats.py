"""Statistics of gene-peak links, on matrices only (no AnnData): candidate gene-peak pairs within
a window of the TSS, background peaks on other chromosomes matched on accessibility and width (and
GC), pseudobulk profiles and their normalisation, and the correlation of each pair against its
background (z-score, p-value, FDR). :mod:`cellbridge.tl._links` groups the cells and calls these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats
from scipy.spatial import cKDTree

from .._errors import CellBridgeInputError

__all__ = ["candidate_pairs", "matched_background"]

_GENE_BLOCK = 256  # genes per block of the genes x peaks correlation matrix (~50 MB per 25k peaks)


# --------------------------------------------------------------------------------------------
# candidate pairs and background
# --------------------------------------------------------------------------------------------
def candidate_pairs(genes: pd.DataFrame, chrom, start, end, window: int) -> pd.DataFrame:
    """Pairs (gene row, peak index) whose peak centre lies within ``window`` bp of the TSS.

    ``genes`` needs ``chrom`` (named as the peaks), ``start``, ``end``, ``strand``. ``distance``
    is peak centre minus TSS in the gene's direction (positive: downstream).
    """
    centre = (np.asarray(start) + np.asarray(end)) // 2
    minus = genes["strand"].to_numpy(str) == "-"
    tss = np.where(minus, genes["end"].to_numpy(np.int64) - 1, genes["start"].to_numpy(np.int64))
    codes = {c: i for i, c in enumerate(pd.unique(np.asarray(chrom)))}
    step = np.int64(1 << 34)  # far above any chromosome length plus the window
    p_code = np.array([codes[c] for c in chrom], np.int64)
    g_code = np.array([codes.get(c, -1) for c in genes["chrom"]], np.int64)
    p_pos = p_code * step + centre
    order = np.argsort(p_pos, kind="stable")
    sorted_pos = p_pos[order]
    g_pos = g_code * step + tss
    lo = np.searchsorted(sorted_pos, g_pos - window, side="left")
    hi = np.searchsorted(sorted_pos, g_pos + window, side="right")
    hi = np.where(g_code < 0, lo, hi)
    counts = hi - lo
    gene_row = np.repeat(np.arange(len(genes)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    peak = order[np.repeat(lo, counts) + offsets]
    distance = (centre[peak] - tss[gene_row]) * np.where(minus[gene_row], -1, 1)
    return pd.DataFrame({"gene_row": gene_row, "peak": peak, "distance": distance})


def _ranks(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ranks scaled to [0, 1), ties broken at random (so matched peaks spread over chromosomes)."""
    order = np.lexsort((rng.random(len(values)), values))
    out = np.empty(len(values))
    out[order] = np.arange(len(values)) / max(len(values), 1)
    return out


def matched_background(features: np.ndarray, chrom: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """For each peak in ``query``, the ``k`` peaks on *other* chromosomes nearest in ``features``.

    ``features`` is peaks x statistics (e.g. ranks of accessibility and width). Returns an
    ``len(query) x k`` array of peak indices (fewer columns when fewer peaks are available).
    """
    out = np.empty((len(query), k), np.int64)
    q_chrom = chrom[query]
    for c in pd.unique(q_chrom):
        rows = np.flatnonzero(q_chrom == c)
        pool = np.flatnonzero(chrom != c)
        if len(pool) < k:
            raise CellBridgeInputError(
                f"Only {len(pool)} usable peaks lie outside {c}; the background needs "
                f"`n_background={k}` peaks on other chromosomes: lower `n_background` or pass peaks "
                "of more chromosomes."
            )
        _, idx = cKDTree(features[pool]).query(features[query[rows]], k=k)
        out[rows] = pool[np.asarray(idx).reshape(len(rows), k)]
    return out

# --------------------------------------------------------------------------------------------
# profiles
# --------------------------------------------------------------------------------------------
def _pseudobulk(X: sp.csr_matrix, groups: np.ndarray, n: int) -> sp.csr_matrix:
    """Sum of the rows of each group (rows with group -1 left out)."""
    use = groups >= 0
    if n == len(groups) and np.array_equal(groups, np.arange(n)):
        return X
    ind = sp.csr_matrix((np.ones(int(use.sum())), (groups[use], np.flatnonzero(use))), shape=(n, len(groups)))
    return sp.csr_matrix(ind @ X)


def _log_normalize(X: sp.csr_matrix, target: float | None = None) -> sp.csr_matrix:
    import scanpy as sc

    tmp = AnnData(X.copy())
    sc.pp.normalize_total(tmp, target_sum=target)
    sc.pp.log1p(tmp)
    return sp.csr_matrix(tmp.X)


def _tfidf(X: sp.csr_matrix) -> sp.csr_matrix:
    """Signac's TF-IDF (method 1): log1p(counts / cell total * n cells / peak total * 1e4)."""
    rows = np.asarray(X.sum(1)).ravel()
    cols = np.asarray(X.sum(0)).ravel()
    tf = sp.diags(1 / np.maximum(rows, 1e-12)) @ X
    out = sp.csr_matrix(tf @ sp.diags(X.shape[0] / np.maximum(cols, 1e-12)) * 1e4)
    out.data = np.log1p(out.data)
    return out


def _column_moments(M: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    n = M.shape[0]
    mean = np.asarray(M.sum(0)).ravel() / n
    sq = np.asarray(M.multiply(M).sum(0)).ravel() / n
    return mean, np.sqrt(np.maximum(sq - mean**2, 0.0))


def _corr_block(E_blk: sp.csr_matrix, A: sp.csr_matrix, mu_e, sd_e, mu_a, sd_a) -> np.ndarray:
    """Pearson correlation of each column of ``E_blk`` with each column of ``A`` (dense result)."""
    n = E_blk.shape[0]
    cross = (E_blk.T @ A).toarray()
    cov = cross / n - np.outer(mu_e, mu_a)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant peaks: never read
        return cov / np.outer(sd_e, sd_a)

# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------
def _links_once(E, A, det_e, det_a, pairs, match_on, chrom, *, n_background, min_cells, seed, group_n,
                pvalue="normal"):
    """Score ``pairs`` on normalised profiles ``E`` (groups x genes) and ``A`` (groups x peaks).

    ``det_e`` / ``det_a``: cells in which each gene / peak is detected; ``match_on``: per-peak
    statistics the background is matched on; ``chrom``: each peak's chromosome.
    """
    mu_e, sd_e = _column_moments(E)
    mu_a, sd_a = _column_moments(A)
    ok_gene = (det_e >= min_cells) & (sd_e > 1e-12)
    ok_peak = (det_a >= min_cells) & (sd_a > 1e-12)
    pairs = pairs[ok_gene[pairs["gene_row"].to_numpy()] & ok_peak[pairs["peak"].to_numpy()]]
    if pairs.empty:
        return None
    usable = np.flatnonzero(ok_peak)
    rng = np.random.default_rng(seed)
    feats = np.column_stack([_ranks(s[usable], rng) for s in match_on])
    query = np.unique(pairs["peak"].to_numpy())
    local = np.full(A.shape[1], -1)
    local[usable] = np.arange(len(usable))
    bg = usable[matched_background(feats, chrom[usable], local[query], n_background)]
    bg_row = np.full(A.shape[1], -1)
    bg_row[query] = np.arange(len(query))

    pairs = pairs.sort_values(["gene_row", "peak"], kind="stable")
    g, p = pairs["gene_row"].to_numpy(), pairs["peak"].to_numpy()
    genes = np.unique(g)
    E_csc = E.tocsc()
    score, bg_mean, bg_sd = (np.empty(len(pairs)) for _ in range(3))
    null_z = []
    for b in range(0, len(genes), _GENE_BLOCK):
        blk = genes[b:b + _GENE_BLOCK]
        C = _corr_block(sp.csr_matrix(E_csc[:, blk]), A, mu_e[blk], sd_e[blk], mu_a, sd_a)
        lo, hi = np.searchsorted(g, blk[0]), np.searchsorted(g, blk[-1], side="right")
        row = np.searchsorted(blk, g[lo:hi])
        score[lo:hi] = C[row, p[lo:hi]]
        B = C[row[:, None], bg[bg_row[p[lo:hi]]]]
        bg_mean[lo:hi], bg_sd[lo:hi] = B.mean(1), B.std(1, ddof=1)
        if pvalue == "background":
            with np.errstate(divide="ignore", invalid="ignore"):
                Zb = (B - bg_mean[lo:hi, None]) / bg_sd[lo:hi, None]
            null_z.append(Zb[np.isfinite(Zb)].astype(np.float32))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(bg_sd > 0, (score - bg_mean) / bg_sd, np.nan)
    if pvalue == "background":  # z of every background peak against its pair's background, pooled
        null = np.sort(np.concatenate(null_z))
        n_ge = len(null) - np.searchsorted(null, np.nan_to_num(z, nan=np.inf), side="left")
        p_value = np.where(np.isfinite(z), (1 + n_ge) / (1 + len(null)), np.nan)
    else:
        p_value = stats.norm.sf(z)
    fdr = np.full(len(z), np.nan)
    fin = np.isfinite(p_value)
    if fin.any():
        fdr[fin] = stats.false_discovery_control(p_value[fin], method="bh")
    return pairs.assign(score=score, zscore=z, pvalue=p_value, fdr=fdr, n_groups=group_n,
                        background_mean=bg_mean, background_sd=bg_sd)
