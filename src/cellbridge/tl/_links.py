"""Gene-peak links: correlation of expression and accessibility across groups of cells.

Cells of both modalities are put in groups: single cells when the data are paired (Signac's
``LinkPeaks`` setting), or metacells of the joint embedding (k-means on the stacked RNA and ATAC
cells; only groups holding cells of both modalities are kept) when they are not. Per group, the
counts are summed (pseudobulk) and normalised (RNA: log of counts per median total; ATAC: TF-IDF or
log CPM), and each gene is correlated (Pearson) with every peak whose centre lies within ``window``
bp of its TSS. Each correlation is compared with the correlations of the same gene with background
peaks on *other* chromosomes matched on accessibility and width (and GC when given): the
``n_background`` nearest peaks in rank space, as Signac's ``MatchRegionStats`` matches them.
"""

from __future__ import annotations

import gzip
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats
from scipy.spatial import cKDTree

from .._errors import CellBridgeInputError, CellBridgeWarning
from ..pp.annotation import (
    match_annotation,
    read_gene_annotation,
    reconcile_chromosomes,
)
from ..pp.atac import peak_coordinates

__all__ = ["LINK_COLUMNS", "gene_peak_links"]

logger = logging.getLogger("cellbridge")

#: Columns of :func:`gene_peak_links` (``group`` is added with ``groupby``).
LINK_COLUMNS = ["gene", "peak", "chrom", "distance", "score", "zscore", "pvalue", "fdr", "n_groups"]
ATAC_NORMALIZATIONS = ("tfidf", "logcpm")
PVALUES = ("normal", "background")
_GENE_BLOCK = 256  # genes per block of the genes x peaks correlation matrix (~50 MB per 25k peaks)
_MIN_GROUPS = 5


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def _matrix(adata: AnnData, layer: str | None, name: str) -> sp.csr_matrix:
    if layer is not None and layer not in adata.layers:
        raise CellBridgeInputError(
            f"`{name}` has no layer {layer!r}; available layers: {list(adata.layers)}. "
            "Pass `layer_...=None` to use `.X`."
        )
    X = adata.X if layer is None else adata.layers[layer]
    if X is None:
        raise CellBridgeInputError(f"`{name}.X` is empty; pass the layer holding the counts.")
    X = sp.csr_matrix(X, dtype=np.float64)  # a new matrix: the user's object is never modified
    if X.nnz and X.data.min() < 0:
        raise CellBridgeInputError(
            f"`{name}` holds negative values (e.g. {X.data.min():.3g}); pass raw counts (or "
            "`layer_...=` naming the layer that holds them)."
        )
    return X


def _annotation(annotation) -> pd.DataFrame:
    if isinstance(annotation, pd.DataFrame):
        missing = [c for c in ("gene_name", "chrom", "start", "end", "strand") if c not in annotation]
        if missing:
            raise CellBridgeInputError(
                f"The annotation DataFrame lacks columns {missing}; create it with "
                "`cellbridge.pp.read_gene_annotation`."
            )
        ann = annotation.drop_duplicates("gene_name")
    else:
        ann = read_gene_annotation(annotation)
    return ann.assign(chrom=ann["chrom"].astype(str), gene_name=ann["gene_name"].astype(str))


def _embedding(adata: AnnData, use_rep: str, name: str) -> np.ndarray:
    if use_rep not in adata.obsm:
        raise CellBridgeInputError(
            f"`{name}.obsm` has no {use_rep!r} (keys: {list(adata.obsm)}); pass `use_rep=` the key "
            "of the joint embedding, e.g. `rna.obsm['X_biclum'] = model.get_latent(rna)`."
        )
    Z = np.asarray(adata.obsm[use_rep], dtype=np.float64)
    if Z.ndim != 2 or not np.isfinite(Z).all():
        raise CellBridgeInputError(f"`{name}.obsm[{use_rep!r}]` must be a finite cells x dims array.")
    return Z


def _atac_embedding(atac: AnnData, atac_embedding, use_rep: str) -> np.ndarray:
    """Embedding of the ATAC cells: ``atac.obsm[use_rep]`` or ``atac_embedding`` matched by name."""
    if atac_embedding is None:
        if use_rep not in atac.obsm:
            raise CellBridgeInputError(
                f"`atac.obsm` has no {use_rep!r}; pass `atac_embedding=` the AnnData of the result "
                "that holds the ATAC cells' embedding (e.g. the gene-activity modality of a BiCLUM "
                "result, `mdata['atac']`), or `paired=True` when RNA and ATAC are the same cells."
            )
        return _embedding(atac, use_rep, "atac")
    if isinstance(atac_embedding, AnnData):
        frame = pd.DataFrame(_embedding(atac_embedding, use_rep, "atac_embedding"),
                             index=atac_embedding.obs_names)
    elif isinstance(atac_embedding, pd.DataFrame):
        frame = atac_embedding
    else:
        Z = np.asarray(atac_embedding, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[0] != atac.n_obs:
            raise CellBridgeInputError(
                f"`atac_embedding` has shape {Z.shape}; an array needs one row per ATAC cell "
                f"({atac.n_obs}). Pass an AnnData or DataFrame to match cells by name."
            )
        return Z
    pos = frame.index.get_indexer(atac.obs_names)
    missing = int((pos < 0).sum())
    if missing:
        example = atac.obs_names[int(np.flatnonzero(pos < 0)[0])]
        raise CellBridgeInputError(
            f"{missing} of {atac.n_obs} cells of the peak matrix `atac` (e.g. {example!r}) are not "
            "in the embedding; pass the peak matrix of the cells that were integrated, e.g. "
            "`atac[atac.obs_names.isin(result_atac.obs_names)]`, with matching cell names."
        )
    return frame.to_numpy(dtype=np.float64)[pos]


def _gc_from_fasta(path, chrom: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """GC fraction of each peak, reading a (gzipped) FASTA one chromosome at a time."""
    gc = np.full(len(chrom), np.nan)
    wanted = {c: np.flatnonzero(chrom == c) for c in pd.unique(chrom)}
    opener = gzip.open if str(path).endswith(".gz") else open

    def finish(name, parts):
        if name is None:
            return
        found = reconcile_chromosomes(list(wanted), [name])
        seq = np.frombuffer(b"".join(parts).upper(), dtype=np.uint8)
        is_gc = np.concatenate([[0], np.cumsum((seq == ord("G")) | (seq == ord("C")))])
        for c in (c for c, a in found.items() if a == name):
            idx = wanted[c]
            s, e = np.clip(start[idx], 0, len(seq)), np.clip(end[idx], 0, len(seq))
            gc[idx] = (is_gc[e] - is_gc[s]) / np.maximum(e - s, 1)

    name, parts = None, []
    with opener(path, "rb") as fh:
        for line in fh:
            if line.startswith(b">"):
                finish(name, parts)
                name, parts = line[1:].split()[0].decode(), []
            else:
                parts.append(line.strip())
    finish(name, parts)
    if np.isnan(gc).all():
        raise CellBridgeInputError(
            f"No peak chromosome is in the genome FASTA {path}; pass the genome of the data's build."
        )
    return np.where(np.isnan(gc), np.nanmean(gc), gc)


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
# groups and profiles
# --------------------------------------------------------------------------------------------
def _metacells(Z_rna, Z_atac, n_groups: int, min_cells: int, seed: int):
    """k-means of the stacked embedding; groups with fewer than ``min_cells`` of a modality dropped."""
    from sklearn.cluster import KMeans

    Z = np.vstack([Z_rna, Z_atac])
    n_groups = min(n_groups, Z.shape[0])
    labels = KMeans(n_clusters=n_groups, n_init=1, random_state=seed).fit_predict(Z)
    g_rna, g_atac = labels[: len(Z_rna)], labels[len(Z_rna):]
    n_r = np.bincount(g_rna, minlength=n_groups)
    n_a = np.bincount(g_atac, minlength=n_groups)
    keep = (n_r >= min_cells) & (n_a >= min_cells)
    if keep.sum() < _MIN_GROUPS:
        single = int(((n_r > 0) != (n_a > 0)).sum())
        raise CellBridgeInputError(
            f"Only {int(keep.sum())} of {n_groups} groups of the joint embedding hold at least "
            f"{min_cells} cells of BOTH modalities ({single} hold a single modality): the embedding "
            "does not mix RNA and ATAC cells. Pass the joint embedding as `use_rep` (e.g. BiCLUM's, "
            "not a per-modality PCA), or lower `n_groups` / `min_cells_per_group`."
        )
    new = np.full(n_groups, -1)
    new[keep] = np.arange(int(keep.sum()))
    return new[g_rna], new[g_atac], int(keep.sum())


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


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def gene_peak_links(
    rna: AnnData,
    atac: AnnData,
    annotation: pd.DataFrame | str | os.PathLike,
    *,
    use_rep: str = "X_biclum",
    atac_embedding: AnnData | pd.DataFrame | np.ndarray | None = None,
    paired: bool = False,
    groupby: str | None = None,
    window: int = 500_000,
    n_groups: int | None = None,
    min_cells_per_group: int = 3,
    n_background: int = 200,
    pvalue: str = "normal",
    min_cells: int = 10,
    genes: Sequence[str] | None = None,
    atac_normalization: str = "tfidf",
    gc_content: str | Sequence[float] | None = None,
    genome: str | os.PathLike | None = None,
    layer_rna: str | None = None,
    layer_atac: str | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Link genes to nearby peaks by correlating expression and accessibility across cell groups.

    Parameters
    ----------
    rna
        Cells x genes raw counts. Unpaired: ``rna.obsm[use_rep]`` holds the joint embedding.
    atac
        Cells x peaks raw counts; coordinates from ``var`` columns (``chrom/start/end``) or names
        (``chr1:100-200``, ``chr1-100-200``, ``chr1_100_200``).
    annotation
        Genes: a DataFrame from :func:`cellbridge.pp.read_gene_annotation`, a GTF/GFF3/BED path
        or a genome name (``"mm10"``...). Chromosome naming is reconciled (``chr1`` = ``1``).
    use_rep
        ``obsm`` key of the joint embedding (unpaired; paired only with ``n_groups``).
    atac_embedding
        Embedding of the ATAC cells when ``atac.obsm[use_rep]`` is absent: an AnnData (e.g. the
        gene-activity modality of a BiCLUM result) or DataFrame matched by cell name, or an array
        aligned with ``atac``.
    paired
        ``rna`` and ``atac`` are the same cells (matched by ``obs_names``): the true pairing is
        used. With ``n_groups=None`` each cell is its own group (Signac's ``LinkPeaks``).
    groupby
        ``obs`` column (in both modalities when unpaired): links are computed within each of its
        values (cluster-specific links, column ``group``; FDR per group).
    window
        Maximum distance (bp) between a gene's TSS and a peak's centre (Signac's default, 500 kb).
    n_groups
        Metacells (k-means on the stacked joint embedding). Default: single cells when paired,
        otherwise ``clip((n_rna + n_atac) / 50, 10, 1000)``.
    min_cells_per_group
        Metacells need at least this many cells of *each* modality; others are dropped.
    n_background
        Background peaks per candidate peak: those on other chromosomes closest in ranks of
        accessibility (total counts) and width (and GC with ``gc_content`` / ``genome``).
    pvalue
        ``"normal"`` (Signac's): one-sided normal tail of ``zscore``. ``"background"``: the share
        of the pooled background z-scores (every background peak of every pair, standardised
        like the pair) at least as large; calibrated under the null but conservative. On
        mop_snare with a random pairing, ``"normal"`` gave p < 0.01 for 3.1% of the pairs on
        single cells and 1.5% on metacells, ``"background"`` 1.1% for both; with the true
        pairing (single cells) it found 1,057 links at FDR < 0.05 against 17 for ``"background"``
        (benchmarks/results/links/gene_peak_links.md).
    min_cells
        Genes and peaks detected in fewer cells (of the cells used) are left out.
    genes
        Restrict to these genes (default: all genes of ``rna`` found in the annotation).
    atac_normalization
        ``"tfidf"`` (Signac's method 1, per group) or ``"logcpm"`` (log1p of counts per million).
    gc_content
        GC fraction per peak: an ``atac.var`` column name or an array.
    genome
        FASTA (plain or gzip) of the genome, to compute the GC fraction of each peak.
    layer_rna, layer_atac
        Layers holding the raw counts (default ``.X``).
    seed
        Seeds k-means and the random tie-breaking of the background match.

    Returns
    -------
    DataFrame with one row per gene-peak pair: ``gene``, ``peak``, ``chrom``, ``distance`` (peak
    centre minus TSS, positive downstream), ``score`` (Pearson r), ``zscore`` (against the
    matched background), ``pvalue`` (one-sided, from z: positive links), ``fdr`` (Benjamini-
    Hochberg over the pairs of a run), ``n_groups`` (cells or metacells correlated),
    ``background_mean``, ``background_sd`` and, with ``groupby``, ``group``. On sparse single
    cells the z-scores are heavy-tailed: a random pairing of mop_snare's cells still gave 247
    links at FDR < 0.05 (1,057 with the true pairing; metacells: 19 vs 767), so read single-cell
    FDRs as a ranking rather than a calibrated rate, or use ``pvalue="background"``. Sorted by gene then
    peak position. ``df.attrs["gene_peak_links"]`` records the settings and counts.
    """
    # ------------------------------------------------------------ checks (before any long work)
    if window <= 0:
        raise CellBridgeInputError(f"`window` must be a positive number of bp, got {window}.")
    if n_background < 2:
        raise CellBridgeInputError(f"`n_background` must be at least 2, got {n_background}.")
    if atac_normalization not in ATAC_NORMALIZATIONS:
        raise CellBridgeInputError(
            f"`atac_normalization` must be one of {ATAC_NORMALIZATIONS}, got {atac_normalization!r}."
        )
    if pvalue not in PVALUES:
        raise CellBridgeInputError(f"`pvalue` must be one of {PVALUES}, got {pvalue!r}.")
    if n_groups is not None and n_groups < _MIN_GROUPS:
        raise CellBridgeInputError(f"`n_groups` must be at least {_MIN_GROUPS}, got {n_groups}.")
    ann = _annotation(annotation)
    match_annotation(ann, rna.var_names)
    chrom, start, end = peak_coordinates(atac)
    ann_chroms = list(pd.unique(ann["chrom"]))
    renamed = reconcile_chromosomes(pd.unique(chrom), ann_chroms)
    to_peak = {a: c for c, a in renamed.items()}  # annotation spelling -> data spelling
    ann = ann[ann["gene_name"].isin(set(rna.var_names))]
    if genes is not None:
        unknown = sorted(set(genes) - set(ann["gene_name"]))
        if len(unknown) == len(set(genes)):
            raise CellBridgeInputError(
                f"None of `genes` (e.g. {list(genes)[:3]}) is both in `rna.var_names` and in the "
                "annotation; pass gene names as in `rna.var_names`."
            )
        ann = ann[ann["gene_name"].isin(set(genes))]
    ann = ann.assign(chrom=ann["chrom"].map(to_peak)).dropna(subset=["chrom"]).reset_index(drop=True)
    pairs = candidate_pairs(ann, chrom, start, end, window)
    if pairs.empty:
        raise CellBridgeInputError(
            f"No peak centre lies within {window:,} bp of the TSS of any of the {len(ann)} "
            f"annotated genes. Check that the genome build and chromosome names of the peaks (e.g. "
            f"{list(pd.unique(chrom))[:3]}) match the annotation (e.g. {ann_chroms[:3]}), or "
            "increase `window`."
        )
    gene_col = rna.var_names.get_indexer(ann["gene_name"])
    gc = None
    if gc_content is not None:
        gc = np.asarray(atac.var[gc_content] if isinstance(gc_content, str) else gc_content, float)
        if gc.shape != (atac.n_vars,) or not np.isfinite(gc).all():
            raise CellBridgeInputError(f"`gc_content` needs one finite value per peak ({atac.n_vars}).")
    elif genome is not None and not Path(genome).exists():
        raise CellBridgeInputError(f"Genome FASTA {genome} does not exist; pass an existing path.")

    X_rna = _matrix(rna, layer_rna, "rna")[:, gene_col]
    cells = _cell_setup(rna, atac, use_rep=use_rep, atac_embedding=atac_embedding, paired=paired,
                        groupby=groupby, n_groups=n_groups)
    X_atac = _matrix(atac, layer_atac, "atac")
    if gc is None and genome is not None:
        gc = _gc_from_fasta(genome, chrom, start, end)
    width = (end - start).astype(float)

    # ------------------------------------------------------------ one run per group value
    settings = {"paired": paired, "n_groups": n_groups, "min_cells_per_group": min_cells_per_group,
                "atac_normalization": atac_normalization, "n_background": n_background,
                "min_cells": min_cells, "seed": seed, "pvalue": pvalue}
    frames = []
    for level, level_cells in cells["levels"].items():
        try:
            out = _links_level(X_rna, X_atac, level_cells, pairs, (width, gc, chrom), **settings)
        except CellBridgeInputError as err:
            if groupby is None:
                raise
            warnings.warn(f"group {level!r} is left out: {err}", CellBridgeWarning, stacklevel=2)
            cells["skipped"].append(str(level))
            continue
        if out is None:
            warnings.warn(f"No gene-peak pair is testable in group {level!r} (too few detected "
                          "genes/peaks); it is left out.", CellBridgeWarning, stacklevel=2)
            continue
        frames.append(out.assign(group=level) if groupby is not None else out)
    if not frames:
        raise CellBridgeInputError(
            f"No gene and peak detected in at least `min_cells={min_cells}` cells vary across the "
            "groups; lower `min_cells` or pass more cells."
        )
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "gene", ann["gene_name"].to_numpy()[df.pop("gene_row").to_numpy()])
    p = df.pop("peak").to_numpy()
    df.insert(1, "peak", np.asarray(atac.var_names)[p])
    df.insert(2, "chrom", chrom[p])
    cols = LINK_COLUMNS + ["background_mean", "background_sd"] + (["group"] if groupby else [])
    df = df[cols]
    df.attrs["gene_peak_links"] = {
        "window": int(window), "n_background": int(n_background), "paired": bool(paired),
        "use_rep": None if paired and n_groups is None else use_rep, "n_groups": n_groups,
        "atac_normalization": atac_normalization, "pvalue": pvalue, "matched_on": ["accessibility", "width"]
        + (["gc"] if gc is not None else []), "n_genes": int(df["gene"].nunique()),
        "n_pairs": len(df), "groupby": groupby, "skipped_groups": cells["skipped"],
    }
    logger.info("%d gene-peak pairs of %d genes", len(df), df["gene"].nunique())
    return df


def _links_level(X_rna, X_atac, level_cells, pairs, peak_info, *, paired, n_groups,
                 min_cells_per_group, atac_normalization, n_background, min_cells, seed, pvalue):
    """Group the cells of one ``groupby`` value, build the profiles, and score the pairs."""
    r_idx, a_idx, Z_r, Z_a = level_cells
    if paired and n_groups is None:
        g_r, g_a, n = np.arange(len(r_idx)), np.arange(len(a_idx)), len(r_idx)
    elif paired:
        g_r, g_a, n = _metacells_paired(Z_r, n_groups, seed)
    else:
        n_auto = int(np.clip((len(r_idx) + len(a_idx)) // 50, 10, 1000))
        g_r, g_a, n = _metacells(Z_r, Z_a, n_groups or n_auto, min_cells_per_group, seed)
    Xr, Xa = X_rna[r_idx], X_atac[a_idx]
    det_e = np.asarray((Xr > 0).sum(0)).ravel()
    det_a = np.asarray((Xa > 0).sum(0)).ravel()
    A_counts = _pseudobulk(Xa, g_a, n)
    E = _log_normalize(_pseudobulk(Xr, g_r, n))
    A = _tfidf(A_counts) if atac_normalization == "tfidf" else _log_normalize(A_counts, 1e6)
    width, gc, chrom = peak_info
    match_on = [np.asarray(A_counts.sum(0)).ravel(), width] + ([gc] if gc is not None else [])
    return _links_once(E, A, det_e, det_a, pairs, match_on, chrom, n_background=n_background,
                       min_cells=min_cells, seed=seed, group_n=n, pvalue=pvalue)


def _metacells_paired(Z, n_groups: int, seed: int):
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=min(n_groups, len(Z)), n_init=1, random_state=seed).fit_predict(Z)
    codes, labels = np.unique(labels, return_inverse=True)
    return labels, labels, len(codes)


def _labels(adata: AnnData, groupby: str, name: str, fallback: AnnData | None = None) -> np.ndarray:
    for source in (adata, fallback):
        if source is not None and groupby in source.obs:
            col = source.obs[groupby]
            if source is adata:
                return col.astype(str).to_numpy()
            pos = source.obs_names.get_indexer(adata.obs_names)
            if (pos >= 0).all():
                return col.astype(str).to_numpy()[pos]
    raise CellBridgeInputError(
        f"`{name}.obs` has no column {groupby!r} (columns: {list(adata.obs.columns)}); add the "
        "cluster labels of these cells (e.g. transferred with `cellbridge.tl.transfer_labels`)."
    )


def _cell_setup(rna, atac, *, use_rep, atac_embedding, paired, groupby, n_groups,
                min_level_cells: int = 20) -> dict:
    """Cell indices (and embeddings) of each group value; paired cells aligned by name."""
    if paired:
        pos = atac.obs_names.get_indexer(rna.obs_names)
        r_all = np.flatnonzero(pos >= 0)
        if len(r_all) == 0:
            raise CellBridgeInputError(
                "`paired=True` but no cell name of `rna` is in `atac.obs_names` (e.g. "
                f"{rna.obs_names[0]!r} vs {atac.obs_names[0]!r}); give both the same cell names, "
                "or pass `paired=False` with a joint embedding."
            )
        if len(r_all) < rna.n_obs or len(r_all) < atac.n_obs:
            warnings.warn(f"paired: {len(r_all)} cells are in both `rna` ({rna.n_obs}) and `atac` "
                          f"({atac.n_obs}); only those are used.", CellBridgeWarning, stacklevel=3)
        a_all = pos[r_all]
        Z_r = _embedding(rna, use_rep, "rna")[r_all] if n_groups is not None else None
        Z_a = None
        labels = _labels(rna, groupby, "rna", atac)[r_all] if groupby else None
        labels_a = labels
    else:
        Z_r = _embedding(rna, use_rep, "rna")
        Z_a = _atac_embedding(atac, atac_embedding, use_rep)
        if Z_r.shape[1] != Z_a.shape[1]:
            raise CellBridgeInputError(
                f"The RNA embedding has {Z_r.shape[1]} dimensions but the ATAC one {Z_a.shape[1]}; "
                "both must come from the same joint embedding."
            )
        r_all, a_all = np.arange(rna.n_obs), np.arange(atac.n_obs)
        labels = _labels(rna, groupby, "rna") if groupby else None
        extra = atac_embedding if isinstance(atac_embedding, AnnData) else None
        labels_a = _labels(atac, groupby, "atac", extra) if groupby else None
    if groupby is None:
        return {"levels": {None: (r_all, a_all, Z_r, Z_a)}, "skipped": []}
    levels, skipped = {}, []
    for level in pd.unique(np.concatenate([labels, labels_a])):
        r_sel, a_sel = labels == level, labels_a == level
        if min(r_sel.sum(), a_sel.sum()) < min_level_cells:
            skipped.append(str(level))
            continue
        levels[level] = (r_all[r_sel], a_all[a_sel], None if Z_r is None else Z_r[r_sel],
                         None if Z_a is None else Z_a[a_sel])
    if skipped:
        warnings.warn(f"groups {skipped} have fewer than {min_level_cells} cells of a modality; no "
                      "links are computed for them.", CellBridgeWarning, stacklevel=3)
    if not levels:
        raise CellBridgeInputError(
            f"No value of `{groupby}` has {min_level_cells} cells in both modalities; pass a "
            "coarser `groupby`."
        )
    return {"levels": levels, "skipped": skipped}
