"""Genomic interval overlaps and streaming of 10x fragments files.

:class:`SegmentIndex` answers "which regions overlap this interval" for millions of intervals at
once. All region boundaries of all chromosomes are sorted into one array of *elementary segments*
(chromosome ``k`` lives at offset ``k * 2**32``); every segment knows the regions covering it.
An interval ``[s, e)`` overlaps region ``g`` exactly when either the segment holding ``s`` is
covered by ``g``, or ``g`` *starts* in a later segment that still begins before ``e``. The two
cases are disjoint, so each (interval, region) pair is found once, with overlapping regions
handled exactly, by two ``searchsorted`` calls and sparse row look-ups.

Fragments files (10x: chrom, start, end, barcode, count; gzip, bgzip or plain) are read in
chunks with memory independent of the file size; the sort order of the file is not used.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import CellBridgeInputError
from .._utils import open_maybe_gzip, progress_bar
from .annotation import reconcile_chromosomes

logger = logging.getLogger("cellbridge")

CHROM_OFFSET = np.int64(1) << 32  # global coordinate = chromosome code * 2**32 + position
BIN_BITS = 12  # 4 kb bins for the coarse position -> segment lookup
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)


def ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(n) for n in lengths])`` without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


def expand_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray):
    """For each entry of ``rows``, all column indices stored in that CSR row.

    Returns ``(which, cols)``: ``which[i]`` is the position in ``rows`` that produced ``cols[i]``.
    """
    counts = indptr[rows + 1] - indptr[rows]
    which = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    pos = np.repeat(indptr[rows], counts) + ragged_arange(counts)
    return which, indices[pos]


def global_coords(code: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return code.astype(np.int64) * CHROM_OFFSET + pos.astype(np.int64)


class SegmentIndex:
    """Regions (chromosome code, start, end; half-open) indexed for vectorised overlap queries.

    Parameters
    ----------
    code, start, end
        One entry per region; ``code`` is an integer chromosome code shared with the queries.
    """

    def __init__(self, code: np.ndarray, start: np.ndarray, end: np.ndarray):
        g0, g1 = global_coords(code, start), global_coords(code, end)
        self.n_regions = len(g0)
        self.bounds = np.unique(np.concatenate([g0, g1]))
        n_rows = len(self.bounds) + 1  # row r = segment [bounds[r-1], bounds[r]); rows 0, -1 empty
        first = np.searchsorted(self.bounds, g0, side="right")
        last = np.searchsorted(self.bounds, g1, side="left")
        span = np.maximum(last - first + 1, 0)
        rows = np.repeat(first, span) + ragged_arange(span)
        cols = np.repeat(np.arange(self.n_regions, dtype=np.int64), span)
        ones = np.ones(len(rows), dtype=np.float32)
        self.cover = sp.csr_matrix((ones, (rows, cols)), shape=(n_rows, self.n_regions))
        ones = np.ones(self.n_regions, dtype=np.float32)
        region_ids = np.arange(self.n_regions)
        self.starts = sp.csr_matrix((ones, (first, region_ids)), shape=(n_rows, self.n_regions))
        self._padded = np.append(self.bounds, np.iinfo(np.int64).max)
        self._build_bins()
        self._n_cover = np.diff(self.cover.indptr)
        self._n_starts_cum = np.concatenate([[0], np.cumsum(np.diff(self.starts.indptr))])

    def _build_bins(self) -> None:
        """Lookup table: number of bounds before each ``2**BIN_BITS`` bp bin of each chromosome."""
        codes = (self.bounds >> 32).astype(np.int64)
        n_codes = int(codes.max()) + 1 if len(codes) else 1
        last = np.zeros(n_codes, np.int64)
        np.maximum.at(last, codes, self.bounds & 0xFFFFFFFF)
        self._n_bins = (last >> BIN_BITS) + 1
        self._bin_offset = np.concatenate([[0], np.cumsum(self._n_bins)])
        code_of_bin = np.repeat(np.arange(n_codes, dtype=np.int64), self._n_bins)
        local = np.arange(self._bin_offset[-1], dtype=np.int64) - self._bin_offset[code_of_bin]
        starts = code_of_bin * CHROM_OFFSET + (local << BIN_BITS)
        self._bin_table = np.searchsorted(self.bounds, starts, side="left")

    def count_bounds_upto(self, q: np.ndarray) -> np.ndarray:
        """``searchsorted(bounds, q, "right")`` via the bin table and a few vectorised steps."""
        if not len(q):
            return np.zeros(0, np.int64)
        code = q >> 32
        known = code < len(self._n_bins)
        code_c = np.where(known, code, 0)
        local = np.minimum((q & 0xFFFFFFFF) >> BIN_BITS, self._n_bins[code_c] - 1)
        r = self._bin_table[self._bin_offset[code_c] + local]
        todo = np.flatnonzero(known)
        for _ in range(8):
            todo = todo[self._padded[r[todo]] <= q[todo]]
            if not len(todo):
                break
            r[todo] += 1
        else:  # dense bin: finish with a binary search
            r[todo] = np.searchsorted(self.bounds, q[todo], side="right")
        unknown = np.flatnonzero(~known)
        r[unknown] = np.searchsorted(self.bounds, q[unknown], side="right")
        return r

    def rows(self, q0: np.ndarray, q1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment rows holding each query start, and the last row beginning before its end."""
        r0 = self.count_bounds_upto(q0)
        # r1 = number of bounds < q1; most queries contain no bound, so step from r0
        # (bounds[r0] is the first bound after q0).
        r1 = r0.copy()
        todo = np.flatnonzero(self._padded[r0] < q1)
        while len(todo):
            r1[todo] += 1
            todo = todo[self._padded[r1[todo]] < q1[todo]]
        return r0, r1

    def hits(self, r0: np.ndarray, r1: np.ndarray) -> np.ndarray:
        """Number of regions each query (given by its rows) overlaps."""
        return self._n_cover[r0] + self._n_starts_cum[r1 + 1] - self._n_starts_cum[r0 + 1]

    def pairs(self, q0: np.ndarray, q1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All overlapping (query, region) pairs for global query intervals ``[q0, q1)``."""
        r0, r1 = self.rows(q0, q1)
        qa, ga = expand_rows(self.cover.indptr, self.cover.indices, r0)
        multi = np.flatnonzero(r1 > r0)
        span = r1[multi] - r0[multi]
        q_of = np.repeat(multi, span)
        rows = np.repeat(r0[multi] + 1, span) + ragged_arange(span)
        qb, gb = expand_rows(self.starts.indptr, self.starts.indices, rows)
        return np.concatenate([qa, q_of[qb]]), np.concatenate([ga, gb])

    def overlap_matrix(self, q0: np.ndarray, q1: np.ndarray) -> sp.csr_matrix:
        """Binary queries x regions CSR matrix of overlaps."""
        qi, gi = self.pairs(q0, q1)
        data = np.ones(len(qi), dtype=np.float32)
        return sp.csr_matrix((data, (qi, gi)), shape=(len(q0), self.n_regions))

    def row_matrices(self, cell: np.ndarray, r0: np.ndarray, r1: np.ndarray, n_cells: int):
        """Cells x regions overlap counts of queries owned by ``cell`` (each query counted once)."""
        n_rows = self.cover.shape[0]
        keep = self._n_cover[r0] > 0
        f0 = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (cell[keep], r0[keep])), shape=(n_cells, n_rows)
        )
        out = f0 @ self.cover
        multi = np.flatnonzero(r1 > r0)
        if len(multi):
            span = r1[multi] - r0[multi]
            rows = np.repeat(r0[multi] + 1, span) + ragged_arange(span)
            cells = np.repeat(cell[multi], span)
            f1 = sp.csr_matrix(
                (np.ones(len(rows), np.float32), (cells, rows)), shape=(n_cells, n_rows)
            )
            out = out + f1 @ self.starts
        return out


# --------------------------------------------------------------------------------------------
# fragments files
# --------------------------------------------------------------------------------------------
def _read_error(path: Path, err: Exception) -> CellBridgeInputError:
    if isinstance(err, (EOFError, zlib.error, gzip.BadGzipFile)):
        return CellBridgeInputError(
            f"Fragments file {path} is truncated or corrupt ({err}); no result was written. "
            "Re-download or re-create it (check with `gzip -t`)."
        )
    return CellBridgeInputError(
        f"Cannot parse fragments file {path} ({err}); expected tab-separated lines "
        "'chrom<TAB>start<TAB>end<TAB>barcode[<TAB>count]' after optional '#' header lines."
    )


def _header(path: Path) -> tuple[int, list[str] | None]:
    """Number of leading ``#`` lines and the fields of the first data line (None if no data)."""
    n_skip = 0
    try:
        with open_maybe_gzip(path, "rb") as fh:
            for raw in fh:
                line = raw.decode("utf-8", errors="replace")
                if line.startswith("#") or not line.strip():
                    n_skip += 1
                    continue
                return n_skip, line.rstrip("\r\n").split("\t")
    except _GZIP_ERRORS as err:
        raise _read_error(path, err) from err
    return n_skip, None


def iter_fragment_chunks(
    path: str | os.PathLike, *, chunk_size: int = 2_000_000
) -> Iterator[pd.DataFrame]:
    """Yield chunks of a fragments file as DataFrames (chrom, start, end, barcode; categorical).

    Leading ``#`` lines are skipped; later ``#`` lines too, unless barcodes contain ``#``. A
    4-column variant without the count column is accepted; the count column is not used (each
    fragment is counted once, as in Signac and ArchR).
    """
    path = Path(path)
    if not path.is_file():
        raise CellBridgeInputError(f"Fragments file {path} does not exist.")
    n_skip, first = _header(path)
    if first is None:
        return
    if len(first) < 4:
        raise CellBridgeInputError(
            f"Fragments file {path} has {len(first)} columns in its first line ({first}); expected "
            "chrom, start, end, barcode and optionally count."
        )
    dtype = {"chrom": "category", "start": np.int64, "end": np.int64, "barcode": "category"}
    comment = None if "#" in first[3] else "#"
    try:
        with open_maybe_gzip(path, "rb") as fh:
            reader = pd.read_csv(
                fh, sep="\t", header=None, skiprows=n_skip, usecols=[0, 1, 2, 3],
                names=list(dtype), dtype=dtype, chunksize=chunk_size, comment=comment,
                engine="c", na_filter=False,
            )
            yield from reader
    except (*_GZIP_ERRORS, ValueError, pd.errors.ParserError) as err:
        raise _read_error(path, err) from err


def barcode_lookup(cells: Sequence[str]) -> pd.Series:
    """Index mapping fragment barcodes to cell positions.

    Cell names match barcodes as they are. Names in the ArchR convention ``sample#barcode`` also
    match the bare ``barcode`` (when that is unambiguous), so ``PBSmall#T.1`` finds ``T.1``.
    Returns a Series: index = names to look up, values = cell positions.
    """
    names = pd.Index(np.asarray(cells, dtype=str))
    stripped = names.str.replace(r"^.*#", "", regex=True)
    extra = ~stripped.isin(names) & ~stripped.duplicated(keep=False) & (stripped != names)
    keys = names.append(stripped[extra])
    pos = np.concatenate([np.arange(len(names)), np.flatnonzero(extra)])
    return pd.Series(pos, index=keys)


@dataclass
class FragmentStream:
    """Counts gathered while streaming a fragments file (the report of :func:`stream_fragments`)."""

    n_fragments: int = 0
    n_in_cells: int = 0
    n_overlapping: int = 0
    absent_contigs: dict[str, int] = field(default_factory=dict)
    codes_seen: set[int] = field(default_factory=set)
    renamed: dict[str, str] = field(default_factory=dict)
    example_barcodes: list[str] = field(default_factory=list)

    def report(self) -> dict:
        frac = 1.0 - self.n_in_cells / self.n_fragments if self.n_fragments else 0.0
        return {
            "n_fragments": self.n_fragments,
            "n_fragments_in_cells": self.n_in_cells,
            "fraction_fragments_not_in_cells": float(frac),
            "n_fragments_used": self.n_overlapping,
            "contigs_absent_from_annotation": dict(sorted(self.absent_contigs.items())),
            "chromosome_renaming": dict(sorted(self.renamed.items())),
        }


def stream_fragments(
    path: str | os.PathLike,
    cells: Sequence[str],
    chrom_names: Sequence[str],
    on_chunk: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], int],
    *,
    chunk_size: int = 2_000_000,
) -> FragmentStream:
    """Stream ``path`` and call ``on_chunk(cell, chrom_code, start, end)`` per chunk.

    Only fragments of ``cells`` on chromosomes of ``chrom_names`` (reconciled naming) reach
    ``on_chunk``, which returns how many of them it used. Returns the :class:`FragmentStream`.
    """
    lookup = barcode_lookup(cells)
    chrom_pos = {c: i for i, c in enumerate(chrom_names)}
    state, chrom_cache = FragmentStream(), {}
    bar = progress_bar(desc=f"reading {Path(path).name}", unit=" fragments", unit_scale=True)
    for chunk in iter_fragment_chunks(path, chunk_size=chunk_size):
        state.n_fragments += len(chunk)
        bar.update(len(chunk))
        bc = chunk["barcode"].cat
        if not state.example_barcodes:
            state.example_barcodes = [str(b) for b in chunk["barcode"].iloc[:3].unique()]
        cell_of_cat = lookup.reindex(bc.categories).fillna(-1).to_numpy(np.int64)
        cell = cell_of_cat[bc.codes]
        in_cells = cell >= 0
        state.n_in_cells += int(in_cells.sum())
        ch = chunk["chrom"].cat
        new = [c for c in ch.categories if c not in chrom_cache]
        if new:
            found = reconcile_chromosomes(new, chrom_names)
            chrom_cache.update({c: chrom_pos.get(found.get(c), -1) for c in new})
            state.renamed.update({c: a for c, a in found.items() if c != a})
        code_of_cat = np.array([chrom_cache[c] for c in ch.categories], dtype=np.int64)
        code = code_of_cat[ch.codes] if len(code_of_cat) else np.zeros(0, np.int64)
        _count_absent(state, ch, in_cells & (code < 0))
        ok = in_cells & (code >= 0)
        state.codes_seen.update(int(c) for c in np.unique(code[ok]))
        start, end = chunk["start"].to_numpy(), chunk["end"].to_numpy()
        state.n_overlapping += on_chunk(cell[ok], code[ok], start[ok], end[ok])
    bar.close()
    return state


def _count_absent(state: FragmentStream, cat, mask: np.ndarray) -> None:
    if not mask.any():
        return
    counts = np.bincount(cat.codes[mask], minlength=len(cat.categories))
    for i in np.flatnonzero(counts):
        name = str(cat.categories[i])
        state.absent_contigs[name] = state.absent_contigs.get(name, 0) + int(counts[i])
