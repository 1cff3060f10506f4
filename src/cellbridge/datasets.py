"""Built-in simulated example and loaders for the real datasets used in benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

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
) -> dict[str, ad.AnnData | pd.DataFrame]:
    """Simulate paired RNA, ATAC peak and ADT counts of the same cells with cell types.

    Every gene lies on a synthetic genome (``chr1``..``chr5``); its peaks sit inside the gene body
    or within 2 kb upstream of its TSS, so gene activity computed from the peaks tracks the gene's
    expression. Cell types differ by a sparse set of up-regulated gene programs; proteins follow
    the expression of their encoding gene.

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
    types = rng.integers(0, n_types, size=n_cells)
    profile = _type_programs(n_types, n_genes, rng)[types]  # cells x genes, relative expression
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type_{t}" for t in types])},
        index=[f"cell{i:06d}" for i in range(n_cells)],
    )
    rna_counts = _counts(profile * rna_depth / profile.sum(1, keepdims=True), rng)
    rna = ad.AnnData(sp.csr_matrix(rna_counts), obs=obs.copy())
    rna.var_names = genes
    atac = _simulate_atac(profile, annotation, peaks_per_gene, n_background_peaks, atac_depth, obs, rng)
    adt_mean = profile[:, : len(_PANEL)] / profile[:, : len(_PANEL)].mean(0) * 20 + 5
    adt = ad.AnnData(_counts(adt_mean, rng).astype(np.float32), obs=obs.copy())
    adt.var_names = list(_PANEL)
    return {"rna": rna, "atac": atac, "adt": adt, "annotation": annotation}


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


def _simulate_atac(profile, annotation, peaks_per_gene, n_background, depth, obs, rng) -> ad.AnnData:
    n_genes = len(annotation)
    gene_of_peak = np.repeat(np.arange(n_genes), peaks_per_gene)
    ann = annotation.iloc[gene_of_peak]
    tss = np.where(ann.strand == "+", ann.start, ann.end).astype(np.int64)
    offset = rng.integers(-1500, 4000, size=gene_of_peak.size)  # upstream -> body
    centre = np.where(ann.strand == "+", tss + offset, tss - offset)
    chrom = ann.chrom.to_numpy()
    bg_chrom = rng.choice([f"chr{c}" for c in range(1, 6)], size=n_background)
    bg_centre = rng.integers(5_000_000, 9_000_000, size=n_background)  # far beyond any gene
    chrom = np.concatenate([chrom, bg_chrom])
    centre = np.concatenate([centre, bg_centre])
    width = rng.integers(200, 800, size=centre.size)
    openness = np.concatenate([
        np.log1p(profile[:, gene_of_peak]),
        np.full((profile.shape[0], n_background), np.log1p(profile).mean()),
    ], axis=1)
    mean = openness / openness.sum(1, keepdims=True) * depth
    X = np.minimum(_counts(mean, rng), 4)
    starts = centre - width // 2
    names = [f"{c}:{s}-{s + w}" for c, s, w in zip(chrom, starts, width)]
    var = pd.DataFrame({"chrom": chrom, "start": starts, "end": starts + width}, index=names)
    order = np.lexsort((var.start.to_numpy(), var.chrom.to_numpy()))
    return ad.AnnData(sp.csr_matrix(X[:, order]), obs=obs.copy(), var=var.iloc[order])


def shared_data_dir() -> Path:
    """``$CELLBRIDGE_DATA`` or ``../shared/data`` next to the working directory."""
    return Path(os.environ.get("CELLBRIDGE_DATA", Path.cwd().parent / "shared" / "data"))


def load_pair(name: str, data_dir: str | os.PathLike | None = None) -> tuple[ad.AnnData, ad.AnnData]:
    """Load one of the shared real datasets as (rna, other), e.g. ``"mop_snare"``, ``"teaseq_pbmc"``."""
    folder = Path(data_dir or shared_data_dir()) / name
    files = {"mop_snare": "atac.h5ad", "teaseq_pbmc": "adt.h5ad", "bmmc_cite_small": "adt.h5ad",
             "bmmc_multiome_small": "atac.h5ad", "pbmc_multiome_tiny": "atac.h5ad"}
    if name not in files:
        raise CellBridgeInputError(f"unknown dataset {name!r}; known: {sorted(files)}.")
    if not folder.is_dir():
        raise CellBridgeInputError(f"{folder} not found; set CELLBRIDGE_DATA to the shared data folder.")
    return ad.read_h5ad(folder / "rna.h5ad"), ad.read_h5ad(folder / files[name])
