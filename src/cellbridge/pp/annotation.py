"""Gene annotations: read GTF / GFF3 / BED-like tables, named genomes, matching to data.

One record per gene: ``gene_name, gene_id, chrom, start, end, strand, biotype`` with 0-based,
half-open coordinates (BED convention). Chromosome names are reconciled with the data
(``chr1`` <-> ``1``, ``chrM`` <-> ``MT``) by :func:`chromosome_key`.
"""

from __future__ import annotations

import io
import logging
import os
import re
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import CellBridgeInputError, CellBridgeWarning
from .._utils import atomic_write, open_maybe_gzip, progress_bar

logger = logging.getLogger("cellbridge")

COLUMNS = ["gene_name", "gene_id", "chrom", "start", "end", "strand", "biotype"]

#: Official GENCODE comprehensive gene annotation (GTF) per genome build. Tests and users
#: may replace entries (e.g. with a ``file://`` URL to a local mirror).
GENOME_URLS: dict[str, str] = {
    "hg38": "https://ftp.ebi.ac.uk/pub/databases/gencode/Gencode_human/release_44/"
    "gencode.v44.annotation.gtf.gz",
    "hg19": "https://ftp.ebi.ac.uk/pub/databases/gencode/Gencode_human/release_19/"
    "gencode.v19.annotation.gtf.gz",
    "mm10": "https://ftp.ebi.ac.uk/pub/databases/gencode/Gencode_mouse/release_M25/"
    "gencode.vM25.annotation.gtf.gz",
}

#: Other accepted spellings of the genome names above (compared case-insensitively).
GENOME_ALIASES: dict[str, str] = {"grch38": "hg38", "grch37": "hg19", "grcm38": "mm10"}

_GTF_GENE_FEATURES = {"gene"}
_GFF_GENE_FEATURES = {"gene", "ncRNA_gene", "pseudogene"}
_PRIMARY = re.compile(r"^(chr)?([0-9]+|X|Y|M|MT)$", re.IGNORECASE)
_ENSEMBL_ID = re.compile(r"^ENS[A-Z]*G\d{6,}")


# --------------------------------------------------------------------------------------------
# chromosome names
# --------------------------------------------------------------------------------------------
def chromosome_key(name: str) -> str:
    """Naming-independent key: ``chr1``/``1`` -> ``1``, ``chrM``/``MT`` -> ``MT``."""
    key = name[3:] if name[:3].lower() == "chr" else name
    return "MT" if key.upper() in ("M", "MT") else key


def reconcile_chromosomes(
    data_chroms: Iterable[str], annotation_chroms: Iterable[str]
) -> dict[str, str]:
    """Map each data chromosome to the annotation's spelling (absent ones are left out).

    Exact names win; otherwise names are compared by :func:`chromosome_key`, so ``chr1`` in the
    data finds ``1`` in the annotation and vice versa.
    """
    ann = list(dict.fromkeys(annotation_chroms))
    exact = set(ann)
    by_key: dict[str, str] = {}
    for c in ann:
        by_key.setdefault(chromosome_key(c), c)
    out = {}
    for c in dict.fromkeys(data_chroms):
        if c in exact:
            out[c] = c
        elif chromosome_key(c) in by_key:
            out[c] = by_key[chromosome_key(c)]
    return out


# --------------------------------------------------------------------------------------------
# named genomes and download
# --------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$CELLBRIDGE_CACHE`` or ``~/.cache/cellbridge``."""
    return Path(os.environ.get("CELLBRIDGE_CACHE", Path.home() / ".cache" / "cellbridge"))


def _genome_key(name: str) -> str | None:
    low = name.lower()
    low = GENOME_ALIASES.get(low, low)
    return low if low in GENOME_URLS else None


def _download(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` atomically (temporary file in the same folder, then rename)."""

    def fetch(tmp: str) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(url) as resp:  # noqa: S310
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=dest.name, delay=0) as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))

    try:
        return atomic_write(dest, fetch, overwrite=True, suffix=".part")
    except (urllib.error.URLError, OSError) as err:
        raise CellBridgeInputError(
            f"Could not download the annotation from {url} ({err}). Download it yourself and pass "
            "the file path as `annotation`, or point `cellbridge.pp.annotation.GENOME_URLS` to a "
            "reachable mirror."
        ) from err


def genome_annotation_path(genome: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Local path of the GENCODE GTF for ``genome``, downloading it once into the cache."""
    key = _genome_key(genome)
    if key is None:
        known = sorted(GENOME_URLS) + sorted(GENOME_ALIASES)
        raise CellBridgeInputError(
            f"Unknown genome {genome!r}; known names: {known}. "
            "Pass a GTF/GFF3/BED file path instead."
        )
    url = GENOME_URLS[key]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache / f"{key}_{Path(url.split('?')[0]).name}"
    if not dest.exists():
        logger.info("Downloading the %s annotation from %s into %s", key, url, dest)
        _download(url, dest)
    return dest


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------
def _sniff_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".gtf"):
        return "gtf"
    if name.endswith((".gff", ".gff3")):
        return "gff3"
    with open_maybe_gzip(path) as fh:
        for line in fh:
            if line.startswith(("#", "track", "browser")) or not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 9 and 'gene_id "' in fields[8]:
                return "gtf"
            if len(fields) == 9 and "=" in fields[8]:
                return "gff3"
            return "bed"
    raise CellBridgeInputError(f"{path} holds no records; pass a GTF, GFF3 or BED-like file.")


def _feature_lines(path: Path, features: set[str]) -> list[list[str]]:
    """Tab-split lines of a GTF/GFF3 whose feature (3rd column) is in ``features``."""
    rows = []
    with open_maybe_gzip(path) as fh:
        for line in fh:
            if line.startswith("#"):
                if line.startswith("##FASTA"):
                    break
                continue
            fields = line.rstrip("\n").split("\t", 8)
            if len(fields) == 9 and fields[2] in features:
                rows.append(fields)
    return rows


def _attr(attrs: pd.Series, keys: Sequence[str], gff3: bool) -> pd.Series:
    """First present attribute among ``keys`` (vectorised regular expressions)."""
    out = pd.Series(None, index=attrs.index, dtype=object)
    for key in keys:
        pattern = rf"(?:^|;)\s*{key}=([^;]+)" if gff3 else rf'(?:^|;)\s*{key} "([^"]*)"'
        missing = out.isna()
        if not missing.any():
            break
        out[missing] = attrs[missing].str.extract(pattern, expand=False)
    return out


def _read_gtf_like(path: Path, fmt: str) -> pd.DataFrame:
    gff3 = fmt == "gff3"
    rows = _feature_lines(path, _GFF_GENE_FEATURES if gff3 else _GTF_GENE_FEATURES)
    aggregate = not rows
    if aggregate:  # no gene records: build genes from transcript/exon records
        rows = _feature_lines(path, {"transcript", "mRNA", "exon"})
    if not rows:
        raise CellBridgeInputError(
            f"{path} has no gene, transcript or exon records; is it a {fmt.upper()} annotation?"
        )
    cols = ["chrom", "source", "feature", "start", "end", "score", "strand", "frame", "attrs"]
    df = pd.DataFrame(rows, columns=cols)
    attrs = df["attrs"]
    gene_id = _attr(attrs, ["gene_id", "ID", "Parent"] if gff3 else ["gene_id"], gff3)
    gene_id = gene_id.str.replace(r"^gene:", "", regex=True)
    name = _attr(attrs, ["gene_name", "Name"] if gff3 else ["gene_name"], gff3)
    biotype = _attr(attrs, ["gene_type", "gene_biotype", "biotype"], gff3)
    out = pd.DataFrame(
        {
            "gene_name": name.fillna(gene_id),
            "gene_id": gene_id.str.replace(r"^(ENS[A-Z]*G\d+)\.\d+$", r"\1", regex=True),
            "chrom": df["chrom"],
            "start": df["start"].astype(np.int64) - 1,
            "end": df["end"].astype(np.int64),
            "strand": df["strand"],
            "biotype": biotype,
        }
    )
    if aggregate:
        agg = {c: "first" for c in COLUMNS if c not in ("gene_id", "start", "end")}
        out = out.groupby("gene_id", sort=False).agg({**agg, "start": "min", "end": "max"})
        out = out.reset_index()[COLUMNS]
    return out


def _is_strand(col: pd.Series) -> bool:
    return bool(col.astype(str).isin(["+", "-", "."]).all())


def _bed_ids(col: pd.Series) -> pd.Series | None:
    """The column as gene ids (Ensembl or Entrez), or None when it looks like a BED score."""
    values = col.astype(str)
    if values.str.match(_ENSEMBL_ID).mean() > 0.5:
        return values
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.notna().all() and numeric.nunique() < 0.5 * len(col):
        return None  # few distinct numbers: a score column
    return values


def _read_bed(path: Path) -> pd.DataFrame:
    with open_maybe_gzip(path) as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.startswith(("#", "track", "browser"))]
    if not lines:
        raise CellBridgeInputError(f"{path} holds no records; pass a GTF, GFF3 or BED-like file.")
    df = pd.read_csv(
        io.StringIO("".join(lines)), sep="\t", header=None, dtype=str, keep_default_na=False
    )
    if not df.iloc[0, 1].isdigit():  # a header row such as "chrom start end name"
        df = df.iloc[1:].reset_index(drop=True)
    if df.shape[1] < 4:
        raise CellBridgeInputError(
            f"{path} has {df.shape[1]} columns; a BED-like gene table needs chrom, start, end, "
            "gene name (then optionally id and/or strand)."
        )
    gene_id, strand = pd.Series(np.nan, index=df.index, dtype=object), None
    if df.shape[1] >= 5 and _is_strand(df[4]):
        strand = df[4]
    elif df.shape[1] >= 6:
        ids = _bed_ids(df[4])
        gene_id = ids if ids is not None else gene_id
        strand = df[5] if _is_strand(df[5]) else None
    elif df.shape[1] == 5:
        ids = _bed_ids(df[4])
        gene_id = ids if ids is not None else gene_id
    if strand is None:
        logger.warning("%s has no strand column: genes are treated as '+' strand.", path)
        strand = pd.Series(".", index=df.index)
    return pd.DataFrame(
        {
            "gene_name": df[3],
            "gene_id": gene_id,
            "chrom": df[0],
            "start": df[1].astype(np.int64),
            "end": df[2].astype(np.int64),
            "strand": strand,
            "biotype": np.nan,
        }
    )


# --------------------------------------------------------------------------------------------
# filtering and de-duplication
# --------------------------------------------------------------------------------------------
def _filter_biotypes(df: pd.DataFrame, biotypes: Sequence[str] | None, source: str) -> pd.DataFrame:
    if biotypes is None:
        return df
    if df["biotype"].isna().all():
        logger.info(
            "%s carries no gene biotypes: the biotype filter %s is not applied (all genes kept).",
            source,
            list(biotypes),
        )
        df.attrs["biotype_filter"] = "not applied (no biotypes in the annotation)"
        return df
    kept = df[df["biotype"].isin(list(biotypes))]
    if kept.empty:
        found = df["biotype"].value_counts().index[:8].tolist()
        raise CellBridgeInputError(
            f"No gene of {source} has a biotype in {list(biotypes)}; biotypes present include "
            f"{found}. Pass `biotypes=None` to keep all genes."
        )
    kept = kept.copy()
    kept.attrs["biotype_filter"] = list(biotypes)
    return kept


def _deduplicate(df: pd.DataFrame, key: str = "gene_name") -> pd.DataFrame:
    """One row per name: prefer a primary chromosome, then the longest gene, then file order."""
    dup = df[key].duplicated(keep=False)
    if not dup.any():
        return df
    order = pd.DataFrame({
        "secondary": ~df["chrom"].astype(str).str.match(_PRIMARY).to_numpy(),
        "neg_length": (df["start"] - df["end"]).to_numpy(),
        "pos": np.arange(len(df)),
        "name": df[key].to_numpy(),
    })
    ranked = order.sort_values(["secondary", "neg_length", "pos"], kind="stable")
    kept_pos = np.sort(ranked.loc[~ranked["name"].duplicated(), "pos"].to_numpy())
    out = df.iloc[kept_pos]
    n_names = int(df.loc[dup, key].nunique())
    examples = df.loc[dup, key].unique()[:5].tolist()
    warnings.warn(
        f"{n_names} gene names occur more than once in the annotation (e.g. {examples}); kept one "
        f"record each ({len(df) - len(out)} dropped): the one on a primary chromosome, then the "
        "longest, then the first in the file.",
        CellBridgeWarning,
        stacklevel=3,
    )
    return out


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def read_gene_annotation(
    source: str | os.PathLike,
    *,
    biotypes: Sequence[str] | None = ("protein_coding",),
    cache_dir: str | os.PathLike | None = None,
    gene_id_as_name: bool = False,
) -> pd.DataFrame:
    """Read a gene annotation into one record per gene.

    Parameters
    ----------
    source
        A GTF or GFF3 file (GENCODE or Ensembl conventions; plain or gzip), a BED-like table
        (tab-separated, 0-based starts: chrom, start, end, name, then optionally an id column
        (Ensembl or Entrez) and/or a strand column), or a genome name: ``"hg38"``/``"GRCh38"``,
        ``"hg19"``/``"GRCh37"``, ``"mm10"``/``"GRCm38"`` (GENCODE GTF from :data:`GENOME_URLS`,
        downloaded once into ``cache_dir``).
    biotypes
        Keep genes of these biotypes (``gene_type``/``gene_biotype``/``biotype`` attributes).
        ``None`` keeps all. BED tables carry no biotype: all genes are kept (logged, and noted in
        ``df.attrs["biotype_filter"]``).
    cache_dir
        Download folder for named genomes; default ``$CELLBRIDGE_CACHE`` or ``~/.cache/cellbridge``.
    gene_id_as_name
        Use the gene id (Ensembl versions stripped) as ``gene_name``, for data indexed by ids.

    Returns
    -------
    DataFrame with columns ``gene_name, gene_id, chrom, start, end, strand, biotype``; ``start``
    is 0-based and ``end`` exclusive. One row per ``gene_name``: duplicated names keep the record
    on a primary chromosome (``1-22, X, Y, M`` with or without ``chr``), then the longest, then the
    first in the file, with a :class:`~cellbridge.CellBridgeWarning` giving the count.
    """
    path = Path(source)
    if not path.exists():
        looks_like_file = any(ch in str(source) for ch in "./\\")
        if _genome_key(str(source)) is None and looks_like_file:
            raise CellBridgeInputError(
                f"Annotation file {source} does not exist; pass an existing GTF/GFF3/BED path or a "
                f"genome name ({sorted(GENOME_URLS)})."
            )
        path = genome_annotation_path(str(source), cache_dir=cache_dir)
    fmt = _sniff_format(path)
    df = _read_bed(path) if fmt == "bed" else _read_gtf_like(path, fmt)
    df = _filter_biotypes(df, biotypes, str(path))
    attrs = dict(df.attrs)
    if gene_id_as_name:
        if df["gene_id"].isna().all():
            raise CellBridgeInputError(
                f"{path} has no gene ids; use `gene_id_as_name=False` or an annotation with ids."
            )
        df = df[df["gene_id"].notna()].assign(gene_name=lambda d: d["gene_id"])
    unnamed = df["gene_name"].isna() | df["gene_name"].astype(str).isin(["", ".", "NA"])
    if unnamed.any():
        logger.info("Dropping %d genes without a name from %s", int(unnamed.sum()), path)
        df = df[~unnamed]
    bad = df["end"] <= df["start"]
    if bad.any():
        first = df[bad].iloc[0]
        example = f"{first['gene_name']} {first['chrom']}:{first['start']}-{first['end']}"
        if bad.all():
            raise CellBridgeInputError(
                f"All {len(df)} genes of {path} end before (or where) they start (e.g. {example}): the "
                "start and end columns look swapped or are not coordinates. A BED-like table needs "
                "chrom, start, end (start < end, 0-based), gene name."
            )
        logger.warning("Dropping %d genes with end <= start from %s (e.g. %s)", int(bad.sum()), path, example)
        df = df[~bad]
    df = _deduplicate(df)
    df = df[COLUMNS].reset_index(drop=True)
    df["gene_name"] = df["gene_name"].astype(str)
    df["chrom"] = df["chrom"].astype(str)
    df.attrs = {**attrs, "source": str(path), "format": fmt}
    logger.info("Read %d genes from %s (%s)", len(df), path, fmt)
    return df


def _looks_like_ids(names: pd.Index) -> float:
    return float(names.str.match(_ENSEMBL_ID).mean()) if len(names) else 0.0


def _case_style(names: pd.Index) -> str:
    letters = names[names.str.match(r"^[A-Za-z][A-Za-z0-9]+$")]
    if len(letters) == 0:
        return "other"
    upper = float((letters == letters.str.upper()).mean())
    title = float(letters.str.match(r"^[A-Z][a-z0-9]+$").mean())
    if upper > 0.6:
        return "upper"
    return "title" if title > 0.4 else "other"


def _mismatch_hint(ann: pd.DataFrame, data: pd.Index) -> str:
    ids_data, ids_ann = _looks_like_ids(data), _looks_like_ids(pd.Index(ann["gene_name"]))
    if ids_data > 0.5 and ids_ann < 0.5:
        ids = set(ann["gene_id"].dropna().astype(str))
        in_ids = float(data.str.replace(r"\.\d+$", "", regex=True).isin(ids).mean())
        if in_ids > 0.1:
            return (f"The data look like Ensembl gene ids (e.g. {data[0]!r}) and {in_ids:.0%} of "
                    "them are annotation gene ids: pass `gene_id_as_name=True`.")
        ann_ids = ann["gene_id"].dropna().astype(str)
        prefix_data = data[0].split("0")[0]
        if len(ann_ids) and not ann_ids.iloc[0].startswith(prefix_data):
            return (f"The data look like Ensembl gene ids with prefix {prefix_data!r} but the "
                    f"annotation ids look like {ann_ids.iloc[0]!r}: another species? Use the "
                    "annotation of the data's genome and `gene_id_as_name=True`.")
        return (f"The data look like Ensembl gene ids (e.g. {data[0]!r}) but the annotation uses "
                f"symbols (e.g. {ann['gene_name'].iloc[0]!r}); convert ids to symbols or use an "
                "annotation with matching ids and `gene_id_as_name=True`.")
    if ids_ann > 0.5 and ids_data < 0.5:
        return (f"The annotation names are Ensembl ids (e.g. {ann['gene_name'].iloc[0]!r}) but the "
                f"data use symbols (e.g. {data[0]!r}); use `gene_id_as_name=False`.")
    ann_style, data_style = _case_style(pd.Index(ann["gene_name"])), _case_style(data)
    upper_hits = float(data.str.upper().isin(set(ann["gene_name"].str.upper())).mean())
    species = {"upper": "human-style (e.g. CD3E)", "title": "mouse-style (e.g. Cd3e)"}
    if ann_style != data_style and {ann_style, data_style} == {"upper", "title"}:
        return (f"The data symbols are {species[data_style]} (e.g. {data[0]!r}) but the annotation "
                f"is {species[ann_style]} (e.g. {ann['gene_name'].iloc[0]!r}); "
                f"{upper_hits:.0%} match "
                "ignoring case. This looks like another species: use the annotation of the data's "
                "genome (e.g. 'mm10' for mouse, 'hg38' for human).")
    return ("Check that the annotation is for the data's species and genome build, and that both "
            "use the same kind of gene names.")


def match_annotation(
    annotation: pd.DataFrame,
    gene_names: Iterable[str],
    *,
    min_fraction: float = 0.1,
) -> dict:
    """Report how many data genes the annotation knows; raise when almost none do.

    Parameters
    ----------
    annotation
        Output of :func:`read_gene_annotation`.
    gene_names
        The data's gene names (e.g. ``rna.var_names``).
    min_fraction
        Raise :class:`~cellbridge.CellBridgeInputError` when fewer than this fraction match; the
        message says whether the data look like Ensembl ids vs symbols or another species.

    Returns
    -------
    dict with ``n_data_genes``, ``n_matched``, ``fraction_matched`` and ``unmatched_examples``.
    """
    data = pd.Index(pd.unique(np.asarray(list(gene_names), dtype=str)))
    known = set(annotation["gene_name"].astype(str))
    hit = data.isin(known)
    report = {
        "n_data_genes": int(len(data)),
        "n_matched": int(hit.sum()),
        "fraction_matched": float(hit.mean()) if len(data) else 0.0,
        "unmatched_examples": data[~hit][:10].tolist(),
    }
    logger.info("%d of %d data genes are in the annotation", report["n_matched"], len(data))
    if len(data) and report["fraction_matched"] < min_fraction:
        raise CellBridgeInputError(
            f"Only {report['n_matched']} of {len(data)} data genes "
            f"({report['fraction_matched']:.1%}) are in the annotation. "
            f"{_mismatch_hint(annotation, data)}"
        )
    return report
