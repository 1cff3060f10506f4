"""Built-in simulated example and loaders for the real datasets used in benchmarks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._errors import CellBridgeInputError

# Surface proteins with the gene that encodes them (used by the simulator's ADT panel).
_PANEL = {
    "CD3": "CD3E", "CD4": "CD4", "CD8a": "CD8A", "CD19": "CD19", "CD14": "CD14",
    "CD16": "FCGR3A", "CD56": "NCAM1", "HLA-DR": "HLA-DRA", "CD11c": "ITGAX", "CD27": "CD27",
    "CD127": "IL7R", "CD25": "IL2RA", "CD38": "CD38", "CD79b": "CD79B", "CD86": "CD86",
    "CD1c": "CD1C", "CD33": "CD33", "CD34": "CD34", "CD69": "CD69", "CD197": "CCR7",
}


def simulate_multiome(
    n_cells: int = 2000,
    *,
    n_types: int = 6,
    n_genes: int = 600,
    peaks_per_gene: int = 3,
    n_background_peaks: int = 300,
    rna_depth: float = 2000.0,
    atac_depth: float = 800.0,
    seed: int = 0,
    chunk: int = 20_000,
) -> dict[str, ad.AnnData | pd.DataFrame]:
    """Simulate paired RNA, ATAC peak and ADT counts of the same cells with cell types.

    Every gene lies on a synthetic genome (``chr1``..``chr5``); its peaks sit inside the gene body
    or within 2 kb upstream of its TSS, so gene activity computed from the peaks tracks the gene's
    expression. Cell types differ by a sparse set of up-regulated gene programs; proteins follow
    the expression of their encoding gene.

    Parameters
    ----------
    n_cells
        Number of cells (at least ``n_types``).
    n_types
        Number of cell types (at least 2), drawn uniformly per cell.
    n_genes
        Number of genes (at least 20: the first ones encode the 20 proteins of the ADT panel).
    peaks_per_gene
        Peaks linked to each gene (in its body or up to 2 kb upstream of its TSS).
    n_background_peaks
        Additional peaks far from any gene.
    rna_depth
        Mean RNA counts per cell.
    atac_depth
        Mean ATAC counts per cell before each peak's count is capped at 4.
    seed
        Random seed; the same seed gives the same data.
    chunk
        Cells simulated at a time (bounds the memory of the dense intermediates); the counts drawn
        for a given ``seed`` depend on it.

    Returns
    -------
    dict with ``"rna"``, ``"atac"`` and ``"adt"`` (cells x features AnnData of integer counts,
    the same cells in the same order, ``obs["cell_type"]``) and ``"annotation"`` (one row per gene:
    ``gene_name, gene_id, chrom, start, end, strand, biotype``).
    """
    if n_genes < len(_PANEL) or n_types < 2 or n_cells < n_types:
        raise CellBridgeInputError(
            f"simulate_multiome needs n_genes >= {len(_PANEL)}, n_types >= 2 and n_cells >= n_types."
        )
    rng = np.random.default_rng(seed)
    genes = list(_PANEL.values()) + [f"Gene{i:04d}" for i in range(n_genes - len(_PANEL))]
    annotation = _simulate_annotation(genes, rng)
    programs = _type_programs(n_types, n_genes, rng)
    peaks = _simulate_peaks(annotation, peaks_per_gene, n_background_peaks, rng)
    types = rng.integers(0, n_types, size=n_cells)
    blocks = [_simulate_block(programs[types[i:i + chunk]], peaks, rna_depth, atac_depth, rng)
              for i in range(0, n_cells, chunk)]  # chunks keep dense intermediates small
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type_{t}" for t in types])},
        index=[f"cell{i:06d}" for i in range(n_cells)],
    )
    rna = ad.AnnData(_pop_stack(blocks, 0), obs=obs.copy())
    rna.var_names = genes
    atac = ad.AnnData(_pop_stack(blocks, 1), obs=obs.copy(), var=peaks.drop(columns="gene"))
    adt = ad.AnnData(np.vstack([b[2] for b in blocks]), obs=obs.copy())
    adt.var_names = list(_PANEL)
    return {"rna": rna, "atac": atac, "adt": adt, "annotation": annotation}


def _pop_stack(blocks: list[list], i: int) -> sp.csr_matrix:
    """Stack the ``i``-th CSR matrix of every block into one, freeing each block once copied."""
    nnz = sum(b[i].nnz for b in blocks)
    n_rows = sum(b[i].shape[0] for b in blocks)
    data = np.empty(nnz, dtype=np.float32)
    indices = np.empty(nnz, dtype=np.int32 if nnz < 2**31 else np.int64)
    indptr = np.zeros(n_rows + 1, dtype=indices.dtype)
    row = pos = 0
    for block in blocks:
        part, block[i] = block[i], None
        data[pos:pos + part.nnz], indices[pos:pos + part.nnz] = part.data, part.indices
        indptr[row + 1:row + 1 + part.shape[0]] = part.indptr[1:] + pos
        row, pos = row + part.shape[0], pos + part.nnz
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, part.shape[1]))


def _simulate_block(profile, peaks, rna_depth, atac_depth, rng):
    """RNA, ATAC (sparse) and ADT counts of one chunk of cells with relative expression ``profile``."""
    rna = _counts(profile * rna_depth / profile.sum(1, keepdims=True), rng)
    gene = peaks["gene"].to_numpy()
    background = np.log1p(profile).mean(1, keepdims=True)
    openness = np.where(gene >= 0, np.log1p(profile[:, np.maximum(gene, 0)]), background)
    atac = np.minimum(_counts(openness / openness.sum(1, keepdims=True) * atac_depth, rng), 4)
    panel = profile[:, : len(_PANEL)]
    adt = _counts(panel / panel.mean(1, keepdims=True) * 20 + 5, rng)
    return [sp.csr_matrix(rna), sp.csr_matrix(atac), adt]


def _counts(mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial (Gamma-Poisson, dispersion 0.5) counts around ``mean``."""
    return rng.poisson(mean * rng.gamma(2.0, 0.5, size=mean.shape)).astype(np.float32)


def _type_programs(n_types: int, n_genes: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.lognormal(0.0, 1.0, size=n_genes)
    fold = np.ones((n_types, n_genes))
    for t in range(n_types):
        up = rng.choice(n_genes, size=max(n_genes // 10, 2), replace=False)
        fold[t, up] = rng.uniform(4, 12, size=up.size)
    return base * fold


def _simulate_annotation(genes: list[str], rng: np.random.Generator) -> pd.DataFrame:
    n = len(genes)
    chrom = np.array([f"chr{c}" for c in rng.integers(1, 6, size=n)])
    start = np.zeros(n, dtype=np.int64)
    for c in np.unique(chrom):
        idx = np.flatnonzero(chrom == c)
        start[idx] = np.cumsum(rng.integers(60_000, 120_000, size=idx.size))
    length = rng.integers(5_000, 40_000, size=n)
    return pd.DataFrame({
        "gene_name": genes, "gene_id": [f"SIMG{i:05d}" for i in range(n)], "chrom": chrom,
        "start": start, "end": start + length, "strand": rng.choice(["+", "-"], size=n),
        "biotype": "protein_coding",
    })


def _simulate_peaks(annotation, peaks_per_gene, n_background, rng) -> pd.DataFrame:
    """Peaks in gene bodies or within 2 kb upstream of TSSs, plus background peaks far from genes.

    Sorted by position, named ``chr:start-end``; ``gene`` is the linked gene's row (-1: background).
    """
    n_genes = len(annotation)
    gene = np.concatenate([np.repeat(np.arange(n_genes), peaks_per_gene), np.full(n_background, -1)])
    ann = annotation.iloc[gene[gene >= 0]]
    tss = np.where(ann.strand == "+", ann.start, ann.end).astype(np.int64)
    offset = rng.integers(-1500, 4000, size=tss.size)  # upstream -> body
    centre = np.concatenate([np.where(ann.strand == "+", tss + offset, tss - offset),
                             rng.integers(5_000_000, 9_000_000, size=n_background)])  # beyond any gene
    chrom = np.concatenate([ann.chrom.to_numpy(), rng.choice([f"chr{c}" for c in range(1, 6)], size=n_background)])
    width = rng.integers(200, 800, size=centre.size)
    starts = centre - width // 2
    names = [f"{c}:{s}-{s + w}" for c, s, w in zip(chrom, starts, width)]
    peaks = pd.DataFrame({"chrom": chrom, "start": starts, "end": starts + width, "gene": gene}, index=names)
    return peaks.iloc[np.lexsort((peaks.start.to_numpy(), peaks.chrom.to_numpy()))]
