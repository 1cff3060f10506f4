"""Gene activity (cells x genes) from a peak matrix or a fragments file, in pure Python.

Methods (see ``docs/gene_activity.md``):

- ``"signac"``: gene body + ``upstream`` bp upstream of the TSS (strand-aware); activity = sum of
  the counts of peaks (or number of fragments / Tn5 insertions) overlapping that region.
- ``"promoter"``: TSS +- ``upstream`` only.
- ``"archr"``: ArchR-like gene score: distance-weighted sum over peaks or 500 bp tiles within a
  gene-boundary-aware window, gene-length weighted, scaled to 1e4 per cell.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import CellBridgeInputError
from .._validate import check_modality, row_blocks
from .annotation import (
    COLUMNS,
    _deduplicate,
    read_gene_annotation,
    reconcile_chromosomes,
)
from .fragments import SegmentIndex, global_coords, stream_fragments

logger = logging.getLogger("cellbridge")

METHODS = ("signac", "promoter", "archr")

#: ArchR ``addGeneScoreMatrix`` defaults for ``method="archr"`` (override: ``archr_options``).
ARCHR_DEFAULTS: dict = {
    "gene_upstream": 5000,  # gene body extended this far upstream of the TSS (d = 0 inside)
    "extend_min": 1000,  # window always reaches at least this far beyond the extended body
    "extend_max": 100_000,  # ... and at most this far, stopping at the neighbouring genes
    "decay": 5000.0,  # weight = exp(-|d| / decay) + exp(-1)
    "scale_factor": 5.0,  # length weight 1 + m (scale_factor - 1) / (max m - min m), m = 1/width
    "tile_size": 500,  # fragments: Tn5 insertions binned into tiles of this size
    "ceiling": 4,  # fragments: insertions per cell and tile capped at this value
    "scale_to": 1e4,  # per-cell total of the scores
}

_PEAK_NAME = r"^(?P<chrom>.+)[:_-](?P<start>\d+)[_-](?P<end>\d+)$"
_VAR_COLUMNS = [("chrom", "start", "end"), ("chr", "start", "end"),
                ("chrom", "chromStart", "chromEnd"), ("seqnames", "start", "end")]


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def peak_coordinates(atac: AnnData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chromosome, start, end of each peak, from ``var`` columns or from the peak names.

    ``var`` columns (``chrom/start/end``, ``chr/start/end``, ``chrom/chromStart/chromEnd`` or
    ``seqnames/start/end``) win; otherwise names ``chr1:100-200``, ``chr1-100-200`` or
    ``chr1_100_200`` are parsed.
    """
    for cols in _VAR_COLUMNS:
        if all(c in atac.var.columns for c in cols):
            chrom = atac.var[cols[0]].astype(str).to_numpy()
            try:
                start = atac.var[cols[1]].astype(np.int64).to_numpy()
                end = atac.var[cols[2]].astype(np.int64).to_numpy()
            except (TypeError, ValueError) as err:
                raise CellBridgeInputError(
                    f"`atac.var[{list(cols)}]` must hold integer coordinates ({err})."
                ) from err
            return _check_peak_order(chrom, start, end, "`atac.var` columns")
    parts = pd.Series(atac.var_names, dtype=str).str.extract(_PEAK_NAME)
    bad = parts["chrom"].isna()
    if bad.any():
        example = atac.var_names[int(np.flatnonzero(bad.to_numpy())[0])]
        raise CellBridgeInputError(
            f"Cannot read peak coordinates from `atac.var_names` (e.g. {example!r}, "
            f"{int(bad.sum())} unparsable). Accepted names: 'chr1:100-200', 'chr1-100-200', "
            "'chr1_100_200'; or put columns chrom/start/end (or chromStart/chromEnd) in `atac.var`."
        )
    return _check_peak_order(parts["chrom"].to_numpy(str), parts["start"].astype(np.int64).to_numpy(),
                             parts["end"].astype(np.int64).to_numpy(), "`atac.var_names`")


def _check_peak_order(chrom, start, end, where: str):
    bad = np.flatnonzero(end < start)
    if len(bad):
        i = int(bad[0])
        raise CellBridgeInputError(
            f"{len(bad)} of {len(start)} peaks in {where} end before they start (e.g. "
            f"{chrom[i]}:{start[i]}-{end[i]}); peak coordinates need start <= end: fix or drop those peaks."
        )
    return chrom, start, end


def _load_annotation(annotation, biotypes, gene_id_as_name, cache_dir) -> pd.DataFrame:
    if annotation is None:
        raise CellBridgeInputError(
            "Pass `annotation`: a DataFrame from `read_gene_annotation`, a GTF/GFF3/BED path, or a "
            "genome name such as 'hg38' or 'mm10'."
        )
    if isinstance(annotation, pd.DataFrame):
        missing = [c for c in ("gene_name", "chrom", "start", "end", "strand")
                   if c not in annotation.columns]
        if missing:
            raise CellBridgeInputError(
                f"The annotation DataFrame lacks columns {missing}; create it with "
                "`cellbridge.pp.read_gene_annotation`."
            )
        ann = _deduplicate(annotation)
    else:
        ann = read_gene_annotation(annotation, biotypes=biotypes, cache_dir=cache_dir,
                                   gene_id_as_name=gene_id_as_name)
    attrs = dict(ann.attrs)
    ann = ann.reindex(columns=COLUMNS).reset_index(drop=True)
    ann["chrom"] = ann["chrom"].astype(str)
    ann.attrs = attrs
    return ann


def _cell_obs(atac: AnnData | None, cells) -> pd.DataFrame:
    if cells is None:
        if atac is None:
            raise CellBridgeInputError(
                "Gene activity from fragments needs the cells: pass `cells` (an AnnData whose "
                "obs_names are the barcodes, or a list of barcodes) or `atac`."
            )
        return atac.obs.copy()
    if isinstance(cells, AnnData):
        if not cells.obs_names.is_unique:
            raise CellBridgeInputError(
                "`cells.obs_names` has duplicated barcodes; make them unique first "
                "(`cells.obs_names_make_unique()`)."
            )
        return cells.obs.copy()
    names = pd.Index(np.asarray(list(cells), dtype=str))
    if names.empty or not names.is_unique:
        raise CellBridgeInputError("`cells` must be a non-empty list of unique barcodes.")
    return pd.DataFrame(index=names)


# --------------------------------------------------------------------------------------------
# regions and weights
# --------------------------------------------------------------------------------------------
def gene_regions(ann: pd.DataFrame, method: str, upstream: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of each gene's counting region (0-based, half-open, strand-aware).

    ``"signac"``: gene body plus ``upstream`` bp upstream of the TSS. ``"promoter"``: TSS +-
    ``upstream``. Genes with unknown strand (``"."``) are treated as ``+``.
    """
    start, end = ann["start"].to_numpy(np.int64), ann["end"].to_numpy(np.int64)
    minus = ann["strand"].to_numpy(str) == "-"
    if method == "promoter":
        tss = np.where(minus, end, start)
        rs, re_ = tss - upstream, tss + upstream
    else:
        rs = np.where(minus, start, start - upstream)
        re_ = np.where(minus, end + upstream, end)
    return np.maximum(rs, 0), re_


def archr_windows(code: np.ndarray, ann: pd.DataFrame, opts: Mapping) -> dict[str, np.ndarray]:
    """Extended bodies, neighbour-bounded windows and length weights of the ArchR-like model."""
    start, end = ann["start"].to_numpy(np.int64), ann["end"].to_numpy(np.int64)
    minus = ann["strand"].to_numpy(str) == "-"
    up = int(opts["gene_upstream"])
    bs = np.maximum(np.where(minus, start, start - up), 0)
    be = np.where(minus, end + up, end)
    m = 1.0 / (be - bs)
    spread = m.max() - m.min() if len(m) else 0.0
    weight = 1.0 + m * (opts["scale_factor"] - 1) / spread if spread > 0 else np.ones_like(m)
    order = np.lexsort((bs, code))
    prev_end, next_start = np.full(len(bs), -1, np.int64), np.full(len(bs), np.iinfo(np.int64).max)
    same = code[order][1:] == code[order][:-1]
    prev_end[order[1:][same]] = be[order[:-1][same]]
    next_start[order[:-1][same]] = bs[order[1:][same]]
    lo = np.minimum(np.maximum(prev_end, bs - opts["extend_max"]), bs - opts["extend_min"])
    hi = np.maximum(np.minimum(next_start, be + opts["extend_max"]), be + opts["extend_min"])
    return {"lo": np.maximum(lo, 0), "hi": hi, "bs": bs, "be": be, "weight": weight}


def archr_weight_matrix(code, win: Mapping, q_code, q_start, q_end) -> sp.csr_matrix:
    """Features x genes weights (e^(-d/decay) + e^-1) * gene weight for features in the window."""
    index = SegmentIndex(code, win["lo"], win["hi"])
    qi, gi = index.pairs(global_coords(q_code, q_start), global_coords(q_code, q_end))
    gap = np.maximum(np.maximum(win["bs"][gi] - q_end[qi], q_start[qi] - win["be"][gi]), 0)
    w = (np.exp(-gap / win["decay"]) + np.exp(-1.0)) * win["weight"][gi]
    return sp.csr_matrix((w.astype(np.float32), (qi, gi)), shape=(len(q_code), len(code)))


def _scale_rows(X: sp.csr_matrix, total: float) -> sp.csr_matrix:
    sums = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(total, sums, out=np.zeros_like(sums, dtype=np.float64), where=sums > 0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ X)


# --------------------------------------------------------------------------------------------
# the two sources
# --------------------------------------------------------------------------------------------
def _chrom_codes(data_chroms: np.ndarray, chrom_names: list[str]):
    uniq, inverse = np.unique(data_chroms, return_inverse=True)
    found = reconcile_chromosomes(uniq, chrom_names)
    pos = {c: i for i, c in enumerate(chrom_names)}
    code_of = np.array([pos.get(found.get(c), -1) for c in uniq], dtype=np.int64)
    code = code_of[inverse]
    counts = np.bincount(inverse[code < 0], minlength=len(uniq))
    absent = {str(uniq[i]): int(counts[i]) for i in np.flatnonzero(counts)}
    renamed = {str(c): a for c, a in found.items() if c != a}
    return code, absent, renamed


def _from_peaks(X, ann, gcode, chrom_names, atac, method, upstream, opts):
    chrom, start, end = peak_coordinates(atac)
    pcode, absent, renamed = _chrom_codes(chrom, chrom_names)
    ok = np.flatnonzero(pcode >= 0)
    if method == "archr":  # windows and length weights use all annotation genes
        win = {**archr_windows(gcode, ann, opts), "decay": float(opts["decay"])}
        M_ok = archr_weight_matrix(gcode, win, pcode[ok], start[ok], end[ok])
    else:
        rs, re_ = gene_regions(ann, method, upstream)
        index = SegmentIndex(gcode, rs, re_)
        M_ok = index.overlap_matrix(global_coords(pcode[ok], start[ok]),
                                    global_coords(pcode[ok], end[ok]))
    keep_gene = np.isin(gcode, np.unique(pcode[ok]))
    coo = M_ok.tocoo()
    M = sp.csr_matrix((coo.data, (ok[coo.row], coo.col)), shape=(len(pcode), len(ann)))
    M, sub = sp.csr_matrix(M[:, keep_gene]), ann[keep_gene].reset_index(drop=True)
    n_used = int((np.diff(M.indptr) > 0).sum())
    if n_used == 0:
        _no_overlap_error("peaks", chrom, chrom_names)
    # row blocks: a backed peak matrix is never loaded whole
    A = sp.vstack([sp.csr_matrix(block, dtype=np.float32) @ M for block in row_blocks(X)], format="csr")
    if method == "archr":
        A = _scale_rows(A, float(opts["scale_to"]))
    report = {"source": "peaks", "n_peaks": int(len(pcode)), "n_peaks_used": n_used,
              "contigs_absent_from_annotation": absent, "chromosome_renaming": renamed}
    return A, sub, report


def _no_overlap_error(what: str, data_chroms, chrom_names) -> None:
    raise CellBridgeInputError(
        f"No {what} overlap any gene region. Check that the genome build and chromosome naming of "
        f"the data (e.g. {list(pd.unique(np.asarray(data_chroms)))[:3]}) match the annotation "
        f"(e.g. {chrom_names[:3]})."
    )


def _signac_fragment_counter(index: SegmentIndex, n_cells: int, insertions: bool):
    acc = {"X": sp.csr_matrix((n_cells, index.n_regions), dtype=np.float32)}

    def on_chunk(cell, code, start, end) -> int:
        if insertions:  # Tn5 cut sites: both fragment ends, each a 1-bp interval
            pos = np.concatenate([start, end - 1])
            q0 = global_coords(np.concatenate([code, code]), pos)
            cell = np.concatenate([cell, cell])
            q1 = q0 + 1
        else:
            q0, q1 = global_coords(code, start), global_coords(code, end)
        r0, r1 = index.rows(q0, q1)
        acc["X"] = acc["X"] + index.row_matrices(cell, r0, r1, n_cells)
        return int((index.hits(r0, r1) > 0).sum())

    return acc, on_chunk


def _tile_offsets(code: np.ndarray, hi: np.ndarray, tile: int) -> np.ndarray:
    """First tile column of each chromosome code (tiles up to the last window end)."""
    n_codes = int(code.max()) + 1 if len(code) else 0
    last = np.zeros(n_codes, np.int64)
    np.maximum.at(last, code, hi)
    return np.concatenate([[0], np.cumsum(last // tile + 1)])


def _archr_fragment_counter(index: SegmentIndex, offsets: np.ndarray, n_cells: int, tile: int):
    acc = {"X": sp.csr_matrix((n_cells, int(offsets[-1])), dtype=np.float32)}

    def on_chunk(cell, code, start, end) -> int:
        pos = np.concatenate([start, end - 1])
        cell, code = np.concatenate([cell, cell]), np.concatenate([code, code])
        g0 = global_coords(code, (pos // tile) * tile)
        r0, r1 = index.rows(g0, g0 + tile)
        hit = index.hits(r0, r1) > 0
        col = offsets[code[hit]] + pos[hit] // tile
        ones = np.ones(len(col), np.float32)
        acc["X"] = acc["X"] + sp.csr_matrix((ones, (cell[hit], col)), shape=acc["X"].shape)
        return int(hit.sum())

    return acc, on_chunk


def _from_fragments(path, obs, ann, gcode, chrom_names, method, upstream, insertions, opts,
                    chunk_size):
    n_cells = obs.shape[0]
    if method == "archr":
        win = {**archr_windows(gcode, ann, opts), "decay": float(opts["decay"])}
        index = SegmentIndex(gcode, win["lo"], win["hi"])
        offsets = _tile_offsets(gcode, win["hi"], int(opts["tile_size"]))
        acc, on_chunk = _archr_fragment_counter(index, offsets, n_cells, int(opts["tile_size"]))
    else:
        rs, re_ = gene_regions(ann, method, upstream)
        index = SegmentIndex(gcode, rs, re_)
        acc, on_chunk = _signac_fragment_counter(index, n_cells, insertions)
    state = stream_fragments(path, obs.index, chrom_names, on_chunk, chunk_size=chunk_size)
    if state.n_fragments == 0:
        raise CellBridgeInputError(
            f"Fragments file {path} holds no fragments (no data lines); "
            "pass the fragments.tsv.gz of the experiment (chrom, start, end, barcode, count)."
        )
    if state.n_in_cells == 0:
        raise CellBridgeInputError(
            f"None of the {n_cells} cell names (e.g. {list(obs.index[:2])}) is a barcode of fragments "
            f"file {path} (its barcodes look like {state.example_barcodes}); pass `cells` whose "
            "obs_names are this file's barcodes (names 'sample#barcode' also match 'barcode')."
        )
    if state.n_overlapping == 0:
        _no_overlap_error(f"fragments of the {n_cells} cells", list(state.absent_contigs),
                          chrom_names)
    if method == "archr":
        A = _archr_scores(acc["X"], offsets, gcode, win, opts)
    else:
        A = acc["X"]
    keep_gene = np.isin(gcode, sorted(state.codes_seen))
    report = {"source": "fragments", "fragments_file": str(path), **state.report()}
    if method == "archr" or insertions:
        report["counted"] = "Tn5 insertions (both fragment ends)"
        report["n_insertions_used"] = report.pop("n_fragments_used")
    else:
        report["counted"] = "fragments"
    return sp.csr_matrix(A[:, keep_gene]), ann[keep_gene].reset_index(drop=True), report


def _archr_scores(X, offsets, gcode, win, opts) -> sp.csr_matrix:
    """Cap insertions per tile, weight tiles by distance to each gene, scale per cell."""
    tile = int(opts["tile_size"])
    X = X.tocsc()
    used = np.flatnonzero(np.diff(X.indptr) > 0)
    X = sp.csr_matrix(X[:, used])
    X.data = np.minimum(X.data, float(opts["ceiling"]))
    t_code = np.searchsorted(offsets, used, side="right") - 1
    t_start = (used - offsets[t_code]) * tile
    W = archr_weight_matrix(gcode, win, t_code, t_start, t_start + tile)
    return _scale_rows(sp.csr_matrix(X @ W), float(opts["scale_to"]))


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def gene_activity(
    atac: AnnData | None = None,
    annotation: pd.DataFrame | str | os.PathLike | None = None,
    *,
    fragments: str | os.PathLike | None = None,
    cells: AnnData | Sequence[str] | None = None,
    method: str = "signac",
    upstream: int = 2000,
    layer: str | None = None,
    insertions: bool = False,
    biotypes: Sequence[str] | None = ("protein_coding",),
    gene_id_as_name: bool = False,
    cache_dir: str | os.PathLike | None = None,
    archr_options: Mapping | None = None,
    chunk_size: int = 2_000_000,
) -> AnnData:
    """Gene activity (cells x genes) from a peak matrix or a fragments file.

    Parameters
    ----------
    atac
        Cells x peaks counts. Peak coordinates come from ``var`` columns (``chrom/start/end``,
        ``chr/start/end``, ``chrom/chromStart/chromEnd``) or names (``chr1:100-200``,
        ``chr1-100-200``, ``chr1_100_200``). With ``fragments``, only its cells (obs) are used.
    annotation
        A DataFrame from :func:`read_gene_annotation` (used as given), a GTF/GFF3/BED path, or a
        genome name (``"hg38"``, ``"hg19"``, ``"mm10"``, ``"GRCh38"``, ``"GRCm38"``).
    fragments
        10x fragments file (chrom, start, end, barcode[, count]; gzip, bgzip or plain; any sort
        order). Streamed in chunks of ``chunk_size`` lines.
    cells
        Cells to count from ``fragments``: an AnnData whose ``obs_names`` are barcodes, or a list
        of barcodes; default ``atac.obs_names``. Names ``sample#barcode`` (ArchR) also match
        ``barcode``.
    method
        ``"signac"`` (gene body + ``upstream`` bp upstream of the TSS), ``"promoter"`` (TSS +-
        ``upstream``) or ``"archr"`` (distance-weighted gene score, see ``archr_options``).
    upstream
        Base pairs upstream of the TSS (``"signac"``) or on each side of it (``"promoter"``).
    layer
        Read counts from ``atac.layers[layer]`` instead of ``atac.X``.
    insertions
        From fragments with ``"signac"``/``"promoter"``: count Tn5 insertions (both fragment ends
        separately) instead of fragments. ``"archr"`` always counts insertions.
    biotypes, gene_id_as_name, cache_dir
        Passed to :func:`read_gene_annotation` when ``annotation`` is a path or genome name.
    archr_options
        Overrides of :data:`ARCHR_DEFAULTS` for ``method="archr"``.
    chunk_size
        Lines of the fragments file per chunk (memory does not grow with the file).

    Returns
    -------
    AnnData with ``X`` a float32 CSR matrix (cells x genes), ``obs`` copied from ``atac`` /
    ``cells``, ``var`` indexed by gene name with ``chrom, start, end, strand`` (genes on chromosomes
    present in the data), and ``uns["gene_activity"]``: a report with the numbers of peaks or
    fragments used, genes with signal, contigs absent from the annotation (with counts), the
    chromosome renaming applied and the method.
    """
    if method not in METHODS:
        raise CellBridgeInputError(f"Unknown method {method!r}; choose one of {list(METHODS)}.")
    if atac is None and fragments is None:
        raise CellBridgeInputError("Pass `atac` (cells x peaks counts) or `fragments` (a file).")
    if atac is not None and fragments is None and cells is not None:
        raise CellBridgeInputError("`cells` is only used with `fragments`; subset `atac` instead.")
    opts = {**ARCHR_DEFAULTS, **(archr_options or {})}
    unknown = set(opts) - set(ARCHR_DEFAULTS)
    if unknown:
        raise CellBridgeInputError(f"Unknown archr_options {sorted(unknown)}; known: "
                                   f"{sorted(ARCHR_DEFAULTS)}.")
    ann = _load_annotation(annotation, biotypes, gene_id_as_name, cache_dir)
    chrom_names = list(pd.unique(ann["chrom"]))
    gcode = pd.Categorical(ann["chrom"], categories=chrom_names).codes.astype(np.int64)
    if fragments is None:
        X = check_modality(atac, "atac", layer=layer, counts=True, in_memory=False)
        A, genes, report = _from_peaks(X, ann, gcode, chrom_names, atac, method, upstream, opts)
        obs = atac.obs.copy()
    else:
        obs = _cell_obs(atac, cells)
        A, genes, report = _from_fragments(fragments, obs, ann, gcode, chrom_names, method,
                                           upstream, insertions, opts, chunk_size)
    return _assemble(A, obs, genes, report, method, upstream, ann)


def _assemble(A, obs, genes, report, method, upstream, ann) -> AnnData:
    var = genes[["chrom", "start", "end", "strand"]].copy()
    var.index = pd.Index(genes["gene_name"].astype(str), name=None)
    A = sp.csr_matrix(A, dtype=np.float32)
    A.sort_indices()
    n_signal = int((np.diff(A.tocsc().indptr) > 0).sum())
    report = {
        "method": method,
        "upstream": int(upstream) if method != "archr" else 0,
        **report,
        "n_cells": int(A.shape[0]),
        "n_genes": int(A.shape[1]),
        "n_genes_with_signal": n_signal,
        "n_annotation_genes": int(len(ann)),
        "biotype_filter": str(ann.attrs.get("biotype_filter", "as given")),
    }
    logger.info("gene activity (%s): %s", method, report)
    out = AnnData(A, obs=obs, var=var)
    out.uns["gene_activity"] = report
    return out
