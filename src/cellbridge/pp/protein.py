"""Protein (ADT) preprocessing: antigen -> gene mapping and CLR normalisation.

The built-in table ``cellbridge/data/protein_gene_map.tsv`` (columns ``protein``, ``gene``) was
curated for CellBridge from the public CD nomenclature (HCDM) and the antigen names used by common
antibody panels (TotalSeq A/B/C, BioLegend, TEA-seq, 10x PBMC, NeurIPS 2021 BMMC). Each antigen is
linked to ONE HGNC symbol; for antigens encoded by several genes a conventional representative is
used (CD3 -> CD3E, HLA-DR -> HLA-DRA, CD16 -> FCGR3A, CD45RA/RO -> PTPRC, TCR a/b -> TRAC,
TCR g/d -> TRDC, HLA-A,B,C -> HLA-A).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from os import PathLike
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._errors import CellBridgeInputError, CellBridgeWarning
from .._validate import check_finite, get_matrix
from ._matrix import clr_matrix

__all__ = ["protein_to_gene", "clr", "builtin_protein_table", "is_isotype_control"]

logger = logging.getLogger("cellbridge")

TableLike = str | PathLike | pd.DataFrame | Mapping[str, str]

_GREEK = {
    "α": "a", "β": "b", "γ": "g", "δ": "d", "ε": "e", "κ": "k", "λ": "l", "µ": "u", "μ": "u",
}
_GREEK_WORDS = re.compile(r"alpha|beta|gamma|delta|epsilon|kappa|lambda")
# Families too broad to be reached by dropping trailing name parts (``TCR Vb17`` is not ``TCR``).
_NO_PREFIX_MATCH = {"tcr", "hla", "ig"}
_SEP = r"[\s_.\-:|/]"
# Technical prefixes/suffixes that panels attach to antigen names.
_PREFIX = re.compile(rf"^(adt|ab|cite|prot|protein|anti{_SEP}?human|anti|human|hu){_SEP}+", re.I)
_SUFFIX = re.compile(
    rf"({_SEP}*\(?\s*total{_SEP}?seq(\W|_)?[abc]?\s*\)?|{_SEP}+(adt|ab|antibody|prot|protein))$", re.I
)
_ISOTYPE = re.compile(r"isotype|iso(\W|_)*ctrl|\bctrl\b|control", re.I)
_ISOTYPE_BARE = re.compile(
    r"^(mouse|rat|hamster|armenianhamster|syrianhamster|ms|rt)?igg\d?[abc]?(k|kappa|l|lambda)?$"
)
_ISOTYPE_SPECIES = re.compile(r"^(mouse|rat|hamster|armenianhamster|syrianhamster)ig")


def _ascii(name: str) -> str:
    for greek, latin in _GREEK.items():
        name = name.replace(greek, latin)
    return name.strip()


def _strip_affixes(name: str) -> str:
    """Remove technical prefixes (``ADT_``) and suffixes (``_TotalSeqB``, ``-ADT``)."""
    original = name = _ascii(name)
    previous = None
    while previous != name:
        previous = name
        name = _PREFIX.sub("", name)
        name = _SUFFIX.sub("", name).strip()
    return name or original


def _key(name: str) -> str:
    """Case- and punctuation-free matching key: ``HLA.DR``, ``hla_dr`` -> ``hladr``.

    Greek letters (symbol or word) become Latin initials (``TCR alpha/beta`` -> ``tcrab``), and a
    separator between two digits is kept as ``.`` so that ``CD3.1`` does not become ``CD31``.
    """
    text = _GREEK_WORDS.sub(lambda m: m.group(0)[0], _ascii(name).lower())
    text = re.sub(r"(?<=\d)[^a-z0-9]+(?=\d)", ".", text)
    return re.sub(r"[^a-z0-9.]", "", text)


def is_isotype_control(name: str) -> bool:
    """Whether an ADT name denotes an isotype control (e.g. ``IgG1.K.Isotype.Control``).

    Parameters
    ----------
    name
        Antibody / feature name as it appears in the panel.

    Returns
    -------
    bool
        ``True`` for isotype controls; ``IgD``, ``IgM`` etc. (real markers) are not.
    """
    text = _strip_affixes(str(name))
    key = _key(text)
    return bool(_ISOTYPE.search(text) or _ISOTYPE_BARE.match(key) or _ISOTYPE_SPECIES.match(key))


@lru_cache(maxsize=1)
def _builtin_frame() -> pd.DataFrame:
    path = resources.files("cellbridge").joinpath("data/protein_gene_map.tsv")
    with path.open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle, sep="\t", dtype=str, keep_default_na=False)


def builtin_protein_table() -> pd.DataFrame:
    """The curated antigen -> HGNC symbol table shipped with CellBridge.

    Returns
    -------
    pandas.DataFrame
        Columns ``protein`` and ``gene`` (a copy; editing it does not change the built-in table).
    """
    return _builtin_frame().copy()


def _read_table_file(path: str | PathLike) -> pd.DataFrame:
    text = str(path)
    sep = "," if text.lower().endswith(".csv") else "\t"
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except FileNotFoundError as err:
        raise CellBridgeInputError(
            f"protein -> gene table {text!r} does not exist; pass an existing TSV/CSV file with "
            "columns `protein` and `gene`, a DataFrame, or a dict."
        ) from err


def _user_frame(table: TableLike) -> pd.DataFrame:
    if isinstance(table, Mapping):
        return pd.DataFrame({"protein": list(table), "gene": list(table.values())})
    frame = table if isinstance(table, pd.DataFrame) else _read_table_file(table)
    missing = {"protein", "gene"} - set(frame.columns)
    if missing:
        raise CellBridgeInputError(
            f"the protein -> gene table lacks column(s) {sorted(missing)} (has {list(frame.columns)}); "
            "rename its columns to `protein` and `gene`."
        )
    return frame[["protein", "gene"]]


def _lookup(frame: pd.DataFrame) -> dict[str, str]:
    """Matching key -> gene; empty/NaN genes mean 'explicitly unmapped'."""
    out: dict[str, str] = {}
    for protein, gene in zip(frame["protein"].astype(str), frame["gene"]):
        gene = "" if pd.isna(gene) else str(gene).strip()
        out[_key(_strip_affixes(protein))] = gene
    return out


def _candidates(name: str) -> list[str]:
    """Keys to try, most specific first.

    The whole name, then shorter leading parts (``CD4_RPA-T4`` -> ``CD4``), then an alias given
    in parentheses (``B220 (CD45R)`` -> ``CD45R``).
    """
    clean = _strip_affixes(name)
    keys = [_key(clean)]
    outside = re.sub(r"\(.*?\)", " ", clean)
    tokens = [t for t in re.split(r"[\s_\-:|/,]+|(?<=\D)\.|\.(?=\D)", outside) if t]
    for end in range(len(tokens), 0, -1):
        key = _key(" ".join(tokens[:end]))
        if key not in _NO_PREFIX_MATCH:
            keys.append(key)
    keys.extend(_key(alias) for alias in re.findall(r"\((.*?)\)", clean))
    keys.append(_key(re.sub(r"[.\-_]\d+$", "", clean)))  # R's make.unique suffix: CD3.1
    return [k for k in dict.fromkeys(keys) if k]


def _map_one(name: str, lookup: dict[str, str], genes: dict[str, str]) -> str | None:
    for key in _candidates(name):
        if key in lookup:
            return lookup[key] or None
        if key in genes:  # the name already is a gene symbol of the table
            return genes[key]
    return None


def _protein_names(proteins: Sequence[str] | AnnData) -> list[str]:
    if isinstance(proteins, AnnData):
        return [str(p) for p in proteins.var_names]
    if isinstance(proteins, str):
        raise CellBridgeInputError(
            "`proteins` is a single string; pass a list of protein names, e.g. `[\"CD3\", \"CD4\"]`."
        )
    return [str(p) for p in proteins]


def protein_to_gene(
    proteins: Sequence[str] | AnnData,
    *,
    table: TableLike | None = None,
    use_builtin: bool = True,
) -> pd.Series:
    """Map antibody (ADT) names to the HGNC symbols of the genes that encode them.

    Matching ignores case, punctuation and common technical affixes, so ``CD8a``/``CD8``,
    ``HLA-DR``/``HLA.DR``/``hla_dr``, ``CD3_TotalSeqB``, ``CD3-ADT`` and ``ADT_CD3`` all match.
    When the whole name is unknown, shorter leading parts are tried (``CD4_RPA-T4`` -> ``CD4``),
    and a name that already is a known gene symbol maps to itself.

    Parameters
    ----------
    proteins
        Protein names, or an AnnData whose ``var_names`` are the proteins.
    table
        User table (TSV/CSV path, DataFrame or dict) with columns ``protein`` and ``gene``; its
        entries override the built-in ones. An empty gene marks a protein as unmapped.
    use_builtin
        Also use the built-in curated table (default). ``False`` uses ``table`` only.

    Returns
    -------
    pandas.Series
        Index: the given names, in order; values: gene symbols, NaN where unmapped.

    Warns
    -----
    CellBridgeWarning
        Listing the proteins (other than isotype controls) that could not be mapped.
    """
    names = _protein_names(proteins)
    frames = [_builtin_frame()] if use_builtin else []
    if table is not None:
        frames.append(_user_frame(table))
    if not frames:
        raise CellBridgeInputError(
            "`use_builtin=False` but no `table` was given; pass a table or keep the built-in one."
        )
    lookup: dict[str, str] = {}
    for frame in frames:  # later frames (the user's) override earlier ones
        lookup.update(_lookup(frame))
    genes = {_key(g): g for g in lookup.values() if g}
    mapped, isotypes, unmapped = [], [], []
    for name in names:
        isotype = is_isotype_control(name)
        gene = None if isotype else _map_one(name, lookup, genes)
        mapped.append(gene if gene else np.nan)
        if gene is None:
            (isotypes if isotype else unmapped).append(name)
    if isotypes:
        logger.info("isotype controls left unmapped: %s", isotypes)
    if unmapped:
        warnings.warn(
            f"{len(unmapped)} of {len(names)} proteins have no gene in the protein -> gene table: "
            f"{unmapped}. Pass `table=` (columns `protein`, `gene`) to map them.",
            CellBridgeWarning,
            stacklevel=2,
        )
    return pd.Series(mapped, index=pd.Index(names, name="protein"), name="gene", dtype=object)


# --------------------------------------------------------------------------------------------------
# CLR normalisation
# --------------------------------------------------------------------------------------------------


def _check_nonnegative(X, where: str) -> None:
    check_finite(X, where)
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size and values.min() < 0:
        raise CellBridgeInputError(
            f"`{where}` has negative values (min {values.min():.3g}); CLR needs non-negative ADT "
            'counts — pass `layer="counts"` if the raw counts are stored there.'
        )


def clr(
    adata: AnnData | np.ndarray | sp.spmatrix,
    *,
    layer: str | None = None,
    axis: Literal["cells", "features"] = "cells",
    copy: bool = False,
):
    """Centred log-ratio normalisation of ADT counts, as Seurat's ``NormalizeData(method="CLR")``.

    For each cell (``axis="cells"``): ``log1p(x / exp(mean(log1p(x))))`` over its proteins.
    ``axis="features"`` normalises each protein across cells instead (Seurat's ``margin = 1``).
    Zeros stay zero, so sparse input stays sparse.

    Parameters
    ----------
    adata
        Cells x proteins AnnData holding non-negative counts, or a dense/sparse matrix.
    layer
        Layer to read and overwrite; ``None`` uses ``.X``.
    axis
        ``"cells"`` (default) or ``"features"``.
    copy
        Return a normalised copy and leave ``adata`` untouched; otherwise modify ``adata``.

    Returns
    -------
    AnnData or matrix or None
        For a matrix input: the normalised matrix (always a new object). For AnnData: the copy
        when ``copy=True``, else ``None``.
    """
    if axis not in ("cells", "features"):
        raise CellBridgeInputError(f'`axis` must be "cells" or "features", got {axis!r}.')
    along = 1 if axis == "cells" else 0
    if not isinstance(adata, AnnData):
        if layer is not None:
            raise CellBridgeInputError("`layer` only applies to AnnData input; drop it for a matrix.")
        X = adata if sp.issparse(adata) else np.asarray(adata)
        if X.ndim != 2:
            raise CellBridgeInputError(f"expected a 2-D cells x proteins matrix, got shape {X.shape}.")
        _check_nonnegative(X, "matrix")
        return clr_matrix(X, along)
    target = adata.copy() if copy else adata
    X = get_matrix(target, layer, name="adata")
    _check_nonnegative(X, f"adata.layers[{layer!r}]" if layer else "adata.X")
    result = clr_matrix(X, along)
    if layer is None:
        target.X = result
    else:
        target.layers[layer] = result
    return target if copy else None
